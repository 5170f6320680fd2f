// SPDX-License-Identifier: GPL-2.0
/*
 * VFIO type1 long-term pins, seen from a device that really does DMA.
 *
 * Needs QEMU's "edu" device (1234:11e8) behind an IOMMU (intel-iommu,
 * intel_iommu=on); the test binds it to vfio-pci itself. For anonymous,
 * MAP_HUGETLB and guest_memfd memory it checks that VFIO_IOMMU_MAP_DMA pins
 * the pages, the device can DMA into them, the pin keeps them out of the
 * pool after the process unmaps them, VFIO_IOMMU_UNMAP_DMA gives them back,
 * and a DMA to the IOVA afterwards faults in the IOMMU. For guest_memfd, a
 * conversion to private waits for VFIO_IOMMU_UNMAP_DMA while the device
 * keeps writing the pages.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "harness_util.h"

#define EDU_VENDOR	"0x1234"
#define EDU_DEVICE	"0x11e8"
#define EDU_ID		0x00
#define EDU_LIVENESS	0x04
#define EDU_DMA_SRC	0x80
#define EDU_DMA_DST	0x88
#define EDU_DMA_COUNT	0x90
#define EDU_DMA_CMD	0x98
#define EDU_CMD_START	0x1
#define EDU_CMD_TO_RAM	0x2
#define EDU_BUF		0x40000	/* the device's own 4 KiB buffer */
#define EDU_XFER	2048	/* QEMU 7.2's edu refuses larger transfers */
#define IOVA		0x1000000UL	/* edu masks DMA addresses to 28 bits */
#define PCI_COMMAND_OFF	0x4
#define PCI_CMD_MEM_MASTER 0x6

/* Finds the edu device and binds it to vfio-pci; returns its BDF or NULL. */
static const char *edu_bind_vfio(char *bdf, size_t len)
{
	char path[PATH_MAX], buf[64];
	struct dirent *d;
	DIR *dir = opendir("/sys/bus/pci/devices");
	FILE *f;
	int found = 0;

	if (!dir)
		return NULL;
	while (!found && (d = readdir(dir))) {
		char vendor[16] = "", device[16] = "";

		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vendor", d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		fscanf(f, "%15s", vendor);
		fclose(f);
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/device", d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		fscanf(f, "%15s", device);
		fclose(f);
		if (!strcmp(vendor, EDU_VENDOR) && !strcmp(device, EDU_DEVICE)) {
			snprintf(bdf, len, "%.*s", (int)len - 1, d->d_name);
			found = 1;
		}
	}
	closedir(dir);
	if (!found)
		return NULL;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", bdf);
	if (readlink(path, buf, sizeof(buf) - 1) > 0 && strstr(buf, "vfio-pci"))
		return bdf;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver_override", bdf);
	f = fopen(path, "w");
	if (!f)
		return NULL;
	fputs("vfio-pci", f);
	fclose(f);
	f = fopen("/sys/bus/pci/drivers_probe", "w");
	if (!f)
		return NULL;
	fputs(bdf, f);
	fclose(f);
	return bdf;
}

static int iommu_group_of(const char *bdf)
{
	char path[PATH_MAX], link[PATH_MAX] = "";

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	if (readlink(path, link, sizeof(link) - 1) < 0)
		return -1;
	return atoi(basename(link));
}

FIXTURE(edu) {
	int container, group, device;
	off_t bar0, config;
	int kmsg;
	char bdf[32];
};

FIXTURE_VARIANT(edu) {
	struct mem_kind kind;
};

FIXTURE_VARIANT_ADD(edu, anon_4k) {
	.kind = { "anonymous 4 KiB pages", 0, 32UL << 20 },
};

FIXTURE_VARIANT_ADD(edu, hugetlb_2m) {
	.kind = { "MAP_HUGETLB 2 MiB pages", MAP_HUGETLB, 8UL << 20 },
};

FIXTURE_VARIANT_ADD(edu, guest_memfd) {
	.kind = { "guest_memfd shared pages", 0, 2UL << 20, true },
};

static uint32_t edu_read(FIXTURE_DATA(edu) *self, off_t reg)
{
	uint32_t val = ~0u;

	pread(self->device, &val, sizeof(val), self->bar0 + reg);
	return val;
}

static void edu_write(FIXTURE_DATA(edu) *self, off_t reg, uint32_t val)
{
	pwrite(self->device, &val, sizeof(val), self->bar0 + reg);
}

/* One DMA transfer; returns 0 once the device reports it finished. */
static int edu_dma(FIXTURE_DATA(edu) *self, uint32_t src, uint32_t dst,
		   uint32_t count, int to_ram)
{
	struct timespec delay = { 0, 10 * 1000 * 1000 };
	int i;

	edu_write(self, EDU_DMA_SRC, src);
	edu_write(self, EDU_DMA_DST, dst);
	edu_write(self, EDU_DMA_COUNT, count);
	edu_write(self, EDU_DMA_CMD, EDU_CMD_START | (to_ram ? EDU_CMD_TO_RAM : 0));
	for (i = 0; i < 1000; i++) {
		if (!(edu_read(self, EDU_DMA_CMD) & EDU_CMD_START))
			return 0;
		nanosleep(&delay, NULL);
	}
	return -ETIMEDOUT;
}

static int dma_map(FIXTURE_DATA(edu) *self, void *vaddr, size_t size)
{
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)vaddr,
		.iova = IOVA,
		.size = size,
	};

	return ioctl(self->container, VFIO_IOMMU_MAP_DMA, &map);
}

static int dma_unmap(FIXTURE_DATA(edu) *self, size_t size)
{
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap), .iova = IOVA, .size = size,
	};

	return ioctl(self->container, VFIO_IOMMU_UNMAP_DMA, &unmap);
}

/* Has the IOMMU reported a fault at @iova since the last call? */
static int dmar_fault_seen(FIXTURE_DATA(edu) *self, unsigned long iova)
{
	struct timespec delay = { 0, 50 * 1000 * 1000 };
	char rec[1024], want[64];
	int i;

	snprintf(want, sizeof(want), "fault addr 0x%lx", iova);
	for (i = 0; i < 20; i++) {
		ssize_t n;

		while ((n = read(self->kmsg, rec, sizeof(rec) - 1)) > 0) {
			rec[n] = 0;
			if (strstr(rec, want))
				return 1;
		}
		nanosleep(&delay, NULL);
	}
	return 0;
}

FIXTURE_SETUP(edu)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	struct vfio_region_info bar0 = { .argsz = sizeof(bar0), .index = VFIO_PCI_BAR0_REGION_INDEX };
	struct vfio_region_info cfg = { .argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	char path[64];
	uint16_t cmd;
	int group;

	if (!edu_bind_vfio(self->bdf, sizeof(self->bdf)))
		SKIP(return, "no edu device (QEMU -device edu) bound to vfio-pci");
	group = iommu_group_of(self->bdf);
	ASSERT_GE(group, 0) TH_LOG("%s has no IOMMU group: boot with intel_iommu=on", self->bdf);

	self->container = open("/dev/vfio/vfio", O_RDWR);
	ASSERT_GE(self->container, 0);
	ASSERT_EQ(ioctl(self->container, VFIO_GET_API_VERSION), VFIO_API_VERSION);
	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	self->group = open(path, O_RDWR);
	ASSERT_GE(self->group, 0) TH_LOG("open %s: %s", path, strerror(errno));
	ASSERT_EQ(ioctl(self->group, VFIO_GROUP_GET_STATUS, &status), 0);
	ASSERT_TRUE(status.flags & VFIO_GROUP_FLAGS_VIABLE);
	ASSERT_EQ(ioctl(self->group, VFIO_GROUP_SET_CONTAINER, &self->container), 0);
	ASSERT_EQ(ioctl(self->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0);
	self->device = ioctl(self->group, VFIO_GROUP_GET_DEVICE_FD, self->bdf);
	ASSERT_GE(self->device, 0);

	ASSERT_EQ(ioctl(self->device, VFIO_DEVICE_GET_REGION_INFO, &bar0), 0);
	ASSERT_EQ(ioctl(self->device, VFIO_DEVICE_GET_REGION_INFO, &cfg), 0);
	self->bar0 = bar0.offset;
	self->config = cfg.offset;
	ASSERT_EQ(pread(self->device, &cmd, sizeof(cmd), self->config + PCI_COMMAND_OFF), 2);
	cmd |= PCI_CMD_MEM_MASTER;
	ASSERT_EQ(pwrite(self->device, &cmd, sizeof(cmd), self->config + PCI_COMMAND_OFF), 2);

	ASSERT_EQ(edu_read(self, EDU_ID) & 0xff, 0xed);
	edu_write(self, EDU_LIVENESS, 0x12345678);
	ASSERT_EQ(edu_read(self, EDU_LIVENESS), ~0x12345678u);

	self->kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	ASSERT_GE(self->kmsg, 0);
	lseek(self->kmsg, 0, SEEK_END);
	TH_LOG("edu %s in IOMMU group %d; memory: %s", self->bdf, group, variant->kind.name);
}

FIXTURE_TEARDOWN(edu)
{
	close(self->kmsg);
	close(self->device);
	close(self->group);
	close(self->container);
}

/* The device copies one pinned page into another, through the IOMMU. */
TEST_F(edu, dma_into_pinned_pages)
{
	size_t size = variant->kind.size, dst = size / 2 + 4096;
	char *buf = map_populated(&variant->kind);
	int i;

	ASSERT_NE(buf, MAP_FAILED);
	for (i = 0; i < EDU_XFER; i++)
		buf[i] = (char)(i * 7 + 1);
	memset(buf + dst, 0, EDU_XFER);
	ASSERT_EQ(dma_map(self, buf, size), 0);

	ASSERT_EQ(edu_dma(self, IOVA, EDU_BUF, EDU_XFER, 0), 0);
	ASSERT_EQ(edu_dma(self, EDU_BUF, IOVA + dst, EDU_XFER, 1), 0);
	EXPECT_EQ(memcmp(buf, buf + dst, EDU_XFER), 0);
	EXPECT_FALSE(dmar_fault_seen(self, IOVA));

	ASSERT_EQ(dma_unmap(self, size), 0);
	ASSERT_EQ(munmap(buf, size), 0);
}

/* munmap() leaves the pinned pages in use; VFIO_IOMMU_UNMAP_DMA frees them. */
TEST_F(edu, pin_holds_pages_until_unmap)
{
	const struct mem_kind *kind = &variant->kind;
	bool huge = kind->mmap_flags & MAP_HUGETLB;
	long npages = kind->size / getpagesize();
	long free0 = hugepages_free(), pins0 = pins_held();
	char *buf = map_populated(kind);

	ASSERT_NE(buf, MAP_FAILED);
	ASSERT_EQ(dma_map(self, buf, kind->size), 0);
	EXPECT_EQ(pins_held() - pins0, npages);
	ASSERT_EQ(munmap(buf, kind->size), 0);
	EXPECT_EQ(pins_held() - pins0, npages);
	if (huge)
		EXPECT_EQ(hugepages_free(), free0 - (long)(kind->size / SZ_2M));
	/* The pages are still the device's to write. */
	ASSERT_EQ(edu_dma(self, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(dmar_fault_seen(self, IOVA));

	ASSERT_EQ(dma_unmap(self, kind->size), 0);
	EXPECT_EQ(pins_held(), pins0);
	if (huge)
		EXPECT_EQ(hugepages_free(), free0);
}

/* Once unmapped, the IOVA is gone: the device's DMA to it faults. */
TEST_F(edu, unmapped_iova_faults)
{
	char *buf = map_populated(&variant->kind);

	ASSERT_NE(buf, MAP_FAILED);
	ASSERT_EQ(dma_map(self, buf, variant->kind.size), 0);
	ASSERT_EQ(edu_dma(self, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(dmar_fault_seen(self, IOVA));
	ASSERT_EQ(dma_unmap(self, variant->kind.size), 0);

	ASSERT_EQ(edu_dma(self, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_TRUE(dmar_fault_seen(self, IOVA));
	ASSERT_EQ(munmap(buf, variant->kind.size), 0);
}

/*
 * Shared to private while the device holds the pages: EAGAIN without
 * KVM_SET_MEMORY_ATTRIBUTES2_DEFER; with it the pages are pending, the host
 * cannot touch them but the device still can, and the conversion completes
 * when VFIO_IOMMU_UNMAP_DMA drops the pins, with what the device wrote.
 */
TEST_F(edu, conversion_completes_on_dma_unmap)
{
	size_t size = variant->kind.size, page = getpagesize();
	long npages = size / page, pins0 = pins_held();
	uint64_t error = -1;
	char *buf;
	int i;

	if (!variant->kind.guest_memfd)
		SKIP(return, "conversion needs guest_memfd");
	buf = map_populated(&variant->kind);
	ASSERT_NE(buf, MAP_FAILED) TH_LOG("guest_memfd: %s", strerror(errno));
	for (i = 0; i < EDU_XFER; i++)
		buf[page + i] = (char)(i * 3 + 1);
	ASSERT_EQ(dma_map(self, buf, size), 0);
	ASSERT_EQ(edu_dma(self, IOVA + page, EDU_BUF, EDU_XFER, 0), 0);

	ASSERT_EQ(gmem_convert(0, size, true, 0, &error), -1);
	EXPECT_EQ(errno, EAGAIN);
	EXPECT_EQ(error, 0);
	EXPECT_TRUE(host_can_read(buf));

	EXPECT_EQ(gmem_convert(0, size, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER, NULL),
		  npages);
	EXPECT_FALSE(host_can_read(buf));
	EXPECT_EQ(pins_held() - pins0, npages);

	/* The pins stay valid: the device writes a pending page. */
	ASSERT_EQ(edu_dma(self, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(dmar_fault_seen(self, IOVA));

	ASSERT_EQ(dma_unmap(self, size), 0);
	EXPECT_EQ(pins_held(), pins0);
	EXPECT_EQ(gmem_convert(0, size, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER |
			       KVM_SET_MEMORY_ATTRIBUTES2_WAIT, NULL), 0);
	EXPECT_FALSE(host_can_read(buf));
	ASSERT_EQ(edu_dma(self, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_TRUE(dmar_fault_seen(self, IOVA));

	/* Back to shared: the page holds what the device wrote while pending. */
	ASSERT_EQ(gmem_convert(0, size, false, 0, NULL), 0);
	ASSERT_TRUE(host_can_read(buf));
	EXPECT_EQ(memcmp(buf, buf + page, EDU_XFER), 0);
	ASSERT_EQ(munmap(buf, size), 0);
}

TEST_HARNESS_MAIN
