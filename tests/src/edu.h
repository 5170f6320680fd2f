/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QEMU's "edu" PCI device (1234:11e8) driven from userspace through VFIO
 * type1, for tests that need a device which really does DMA through an
 * IOMMU (QEMU: -device intel-iommu,intremap=on -device edu; kernel:
 * intel_iommu=on).
 *
 * edu_open() binds the device to vfio-pci, attaches its IOMMU group to a
 * fresh type1 container and enables bus mastering. edu_dma_map() and
 * edu_dma_unmap() are VFIO_IOMMU_MAP_DMA and VFIO_IOMMU_UNMAP_DMA (the map
 * pins the pages, FOLL_LONGTERM); edu_dma() has the device copy between RAM
 * (an IOVA) and its own 4 KiB buffer at EDU_BUF. edu_dmar_fault_seen() looks
 * for the IOMMU's fault report in the kernel log.
 *
 * Nothing here asserts: functions return 0 or a negative errno, and
 * edu_open() says why it failed in edu->err.
 */
#ifndef EDU_H
#define EDU_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/vfio.h>

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
#define EDU_IOVA_LIMIT	(1UL << 28)	/* edu masks DMA addresses to 28 bits */
#define PCI_COMMAND_OFF	0x4
#define PCI_CMD_MEM_MASTER 0x6

struct edu {
	int container, group, device;	/* VFIO container, group and device fds */
	off_t bar0, config;		/* BAR0 and config space in the device fd */
	int kmsg;			/* /dev/kmsg, read for DMAR faults */
	int iommu_group;		/* the group's number */
	char bdf[32];			/* PCI address, e.g. 0000:00:03.0 */
	char err[256];			/* why edu_open() failed */
};

/* Reads the first word of a sysfs file of the device into @buf. */
static inline bool edu_sysfs_word(const char *dev, const char *attr,
				  char *buf, size_t len)
{
	char path[PATH_MAX], fmt[16];
	FILE *f;
	bool ok;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/%s", dev, attr);
	f = fopen(path, "r");
	if (!f)
		return false;
	snprintf(fmt, sizeof(fmt), "%%%zus", len - 1);
	ok = fscanf(f, fmt, buf) == 1;
	fclose(f);
	return ok;
}

/* Writes @val to a sysfs file; false if it could not. */
static inline bool edu_sysfs_write(const char *path, const char *val)
{
	FILE *f = fopen(path, "w");
	bool ok;

	if (!f)
		return false;
	ok = fputs(val, f) >= 0;
	return !fclose(f) && ok;
}

/* Finds the edu device; its BDF goes to edu->bdf. */
static inline bool edu_find(struct edu *edu)
{
	DIR *dir = opendir("/sys/bus/pci/devices");
	struct dirent *d;
	bool found = false;

	if (!dir)
		return false;
	while (!found && (d = readdir(dir))) {
		char vendor[16] = "", device[16] = "";

		if (!edu_sysfs_word(d->d_name, "vendor", vendor, sizeof(vendor)) ||
		    !edu_sysfs_word(d->d_name, "device", device, sizeof(device)))
			continue;
		if (!strcmp(vendor, EDU_VENDOR) && !strcmp(device, EDU_DEVICE)) {
			snprintf(edu->bdf, sizeof(edu->bdf), "%.*s",
				 (int)sizeof(edu->bdf) - 1, d->d_name);
			found = true;
		}
	}
	closedir(dir);
	return found;
}

/* Binds edu->bdf to vfio-pci, unless it already is. */
static inline bool edu_bind_vfio(struct edu *edu)
{
	char path[PATH_MAX], drv[PATH_MAX] = "";

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", edu->bdf);
	if (readlink(path, drv, sizeof(drv) - 1) > 0 && strstr(drv, "vfio-pci"))
		return true;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver_override", edu->bdf);
	if (!edu_sysfs_write(path, "vfio-pci"))
		return false;
	return edu_sysfs_write("/sys/bus/pci/drivers_probe", edu->bdf);
}

static inline int edu_iommu_group_of(const char *bdf)
{
	char path[PATH_MAX], link[PATH_MAX] = "";

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	if (readlink(path, link, sizeof(link) - 1) < 0)
		return -1;
	return atoi(basename(link));
}

static inline uint32_t edu_read(struct edu *edu, off_t reg)
{
	uint32_t val = ~0u;

	if (pread(edu->device, &val, sizeof(val), edu->bar0 + reg) != sizeof(val))
		return ~0u;
	return val;
}

/* A write that fails shows as a device that does not do what it was told. */
static inline void edu_write(struct edu *edu, off_t reg, uint32_t val)
{
	pwrite(edu->device, &val, sizeof(val), edu->bar0 + reg);
}

/* Records why edu_open() failed; returns @ret (a negative errno). */
static inline int edu_fail(struct edu *edu, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(edu->err, sizeof(edu->err), fmt, ap);
	va_end(ap);
	return ret;
}

/* The VFIO side: container, group, device fd and its regions. */
static inline int edu_open_vfio(struct edu *edu)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	struct vfio_region_info bar0 = {
		.argsz = sizeof(bar0), .index = VFIO_PCI_BAR0_REGION_INDEX,
	};
	struct vfio_region_info cfg = {
		.argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX,
	};
	char path[64];

	edu->container = open("/dev/vfio/vfio", O_RDWR);
	if (edu->container < 0)
		return edu_fail(edu, -errno, "open /dev/vfio/vfio: %s", strerror(errno));
	if (ioctl(edu->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		return edu_fail(edu, -EINVAL, "VFIO_GET_API_VERSION: not %d", VFIO_API_VERSION);
	snprintf(path, sizeof(path), "/dev/vfio/%d", edu->iommu_group);
	edu->group = open(path, O_RDWR);
	if (edu->group < 0)
		return edu_fail(edu, -errno, "open %s: %s", path, strerror(errno));
	if (ioctl(edu->group, VFIO_GROUP_GET_STATUS, &status))
		return edu_fail(edu, -errno, "VFIO_GROUP_GET_STATUS: %s", strerror(errno));
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return edu_fail(edu, -EBUSY, "IOMMU group %d is not viable", edu->iommu_group);
	if (ioctl(edu->group, VFIO_GROUP_SET_CONTAINER, &edu->container))
		return edu_fail(edu, -errno, "VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
	if (ioctl(edu->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		return edu_fail(edu, -errno, "VFIO_SET_IOMMU(TYPE1v2): %s", strerror(errno));
	edu->device = ioctl(edu->group, VFIO_GROUP_GET_DEVICE_FD, edu->bdf);
	if (edu->device < 0)
		return edu_fail(edu, -errno, "VFIO_GROUP_GET_DEVICE_FD %s: %s",
				edu->bdf, strerror(errno));
	if (ioctl(edu->device, VFIO_DEVICE_GET_REGION_INFO, &bar0) ||
	    ioctl(edu->device, VFIO_DEVICE_GET_REGION_INFO, &cfg))
		return edu_fail(edu, -errno, "VFIO_DEVICE_GET_REGION_INFO: %s", strerror(errno));
	edu->bar0 = bar0.offset;
	edu->config = cfg.offset;
	return 0;
}

/* Enables bus mastering and checks that the device answers. */
static inline int edu_enable(struct edu *edu)
{
	uint16_t cmd;

	if (pread(edu->device, &cmd, sizeof(cmd), edu->config + PCI_COMMAND_OFF) != sizeof(cmd))
		return edu_fail(edu, -EIO, "reading the PCI command register failed");
	cmd |= PCI_CMD_MEM_MASTER;
	if (pwrite(edu->device, &cmd, sizeof(cmd), edu->config + PCI_COMMAND_OFF) != sizeof(cmd))
		return edu_fail(edu, -EIO, "enabling bus mastering failed");

	if ((edu_read(edu, EDU_ID) & 0xff) != 0xed)
		return edu_fail(edu, -ENODEV, "%s: ID register 0x%x is not edu's",
				edu->bdf, edu_read(edu, EDU_ID));
	edu_write(edu, EDU_LIVENESS, 0x12345678);
	if (edu_read(edu, EDU_LIVENESS) != ~0x12345678u)
		return edu_fail(edu, -EIO, "%s: liveness check failed", edu->bdf);
	return 0;
}

static inline void edu_close(struct edu *edu)
{
	int *fds[] = { &edu->kmsg, &edu->device, &edu->group, &edu->container };
	unsigned int i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

/*
 * Opens the edu device through VFIO. Returns 0; -ENODEV if there is no edu
 * device or it cannot be bound to vfio-pci; another negative errno, with
 * the reason in edu->err, if it is there but unusable. On failure nothing
 * stays open.
 */
static inline int edu_open(struct edu *edu)
{
	int ret;

	memset(edu, 0, sizeof(*edu));
	edu->container = -1;
	edu->group = -1;
	edu->device = -1;
	edu->kmsg = -1;
	if (!edu_find(edu) || !edu_bind_vfio(edu))
		return edu_fail(edu, -ENODEV, "no edu device (QEMU -device edu) bound to vfio-pci");
	edu->iommu_group = edu_iommu_group_of(edu->bdf);
	if (edu->iommu_group < 0)
		return edu_fail(edu, -ENOENT, "%s has no IOMMU group: boot with intel_iommu=on",
				edu->bdf);

	ret = edu_open_vfio(edu);
	if (!ret)
		ret = edu_enable(edu);
	if (!ret) {
		edu->kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
		if (edu->kmsg < 0)
			ret = edu_fail(edu, -errno, "open /dev/kmsg: %s", strerror(errno));
		else
			lseek(edu->kmsg, 0, SEEK_END);
	}
	if (ret)
		edu_close(edu);
	return ret;
}

/* One DMA transfer; returns 0 once the device reports it finished. */
static inline int edu_dma(struct edu *edu, uint32_t src, uint32_t dst,
			  uint32_t count, int to_ram)
{
	struct timespec delay = { 0, 10 * 1000 * 1000 };
	int i;

	edu_write(edu, EDU_DMA_SRC, src);
	edu_write(edu, EDU_DMA_DST, dst);
	edu_write(edu, EDU_DMA_COUNT, count);
	edu_write(edu, EDU_DMA_CMD, EDU_CMD_START | (to_ram ? EDU_CMD_TO_RAM : 0));
	for (i = 0; i < 1000; i++) {
		if (!(edu_read(edu, EDU_DMA_CMD) & EDU_CMD_START))
			return 0;
		nanosleep(&delay, NULL);
	}
	return -ETIMEDOUT;
}

/* VFIO_IOMMU_MAP_DMA of [@vaddr, +@size) at @iova, readable and writable. */
static inline int edu_dma_map(struct edu *edu, uint64_t iova, void *vaddr, size_t size)
{
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)vaddr,
		.iova = iova,
		.size = size,
	};

	return ioctl(edu->container, VFIO_IOMMU_MAP_DMA, &map) ? -errno : 0;
}

static inline int edu_dma_unmap(struct edu *edu, uint64_t iova, size_t size)
{
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap), .iova = iova, .size = size,
	};

	return ioctl(edu->container, VFIO_IOMMU_UNMAP_DMA, &unmap) ? -errno : 0;
}

/*
 * Has the IOMMU reported a fault at @iova since the last call (or since
 * edu_open())? Reads the kernel log for up to a second.
 */
static inline bool edu_dmar_fault_seen(struct edu *edu, uint64_t iova)
{
	struct timespec delay = { 0, 50 * 1000 * 1000 };
	char rec[1024], want[64];
	int i;

	snprintf(want, sizeof(want), "fault addr 0x%llx", (unsigned long long)iova);
	for (i = 0; i < 20; i++) {
		ssize_t n;

		while ((n = read(edu->kmsg, rec, sizeof(rec) - 1)) > 0) {
			rec[n] = 0;
			if (strstr(rec, want))
				return true;
		}
		nanosleep(&delay, NULL);
	}
	return false;
}

#endif
