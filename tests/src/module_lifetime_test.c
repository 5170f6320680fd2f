// SPDX-License-Identifier: GPL-2.0
/*
 * KVM built as modules, and a pin that outlives the VM, the guest_memfd and,
 * if it could, the module.
 *
 * A VFIO type1 pin (QEMU's edu device behind intel-iommu) holds half of a
 * guest_memfd whose conversion to private is pending. The VM and the
 * guest_memfd are closed, then unloading kvm_amd and kvm is tried: both must
 * be refused, as every pending folio keeps the module that owns it loaded,
 * so that core mm never calls into unloaded text. Dropping the pin frees the
 * folios (kvm/gmem_freed_folios counts them); the modules then unload, and
 * free memory (MemFree plus the per-CPU lists: free_kb()) comes back to
 * where it was before KVM was loaded, but for the page tables the direct
 * map took (CONFIG_KVM_GMEM_UNMAP_PRIVATE splits it for guest_memfd).
 *
 * The baseline is taken after one load/use/unload cycle without a pin, so
 * that what loading KVM and binding edu to vfio-pci keep for good (slab
 * caches, the IOMMU's tables, sysfs) is not counted as a leak. A second
 * test does the same with a piece of a 2 MiB hugetlb page, whose page must
 * come back to the pool whole.
 */
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "harness_util.h"
#include "edu.h"

#define IOVA		0x1000000UL
#define GMEM_SIZE	(32UL << 20)
#define PINNED		(16UL << 20)
/*
 * Free memory drifts by up to 1.9 MiB between the two readings with nothing
 * lost (slab caches, KASAN's quarantine; four runs). A quarter of PINNED,
 * 4 MiB, is twice that: losing a quarter of the pinned folios fails here,
 * and the gmem_freed_folios count catches the loss of any single one.
 */
#define MEMFREE_SLACK_KB	(PINNED / 4 / 1024)

static int unload(const char *name)
{
	return syscall(__NR_delete_module, name, O_NONBLOCK) ? -errno : 0;
}

/* The folios go back from a worker: give it up to ten seconds. */
static int unload_when_unused(const char *name)
{
	int i, r;

	for (i = 0; i < 200 && (r = unload(name)) == -EWOULDBLOCK; i++)
		usleep(50 * 1000);
	return r;
}

static long gmem_counter(const char *name)
{
	char path[96];

	snprintf(path, sizeof(path), "/sys/kernel/debug/kvm/gmem_%s_folios", name);
	return file_long(path);
}

/* The worker frees the folios after the last unpin: up to ten seconds. */
static long gmem_counter_reaches(const char *name, long want)
{
	long val;
	int i;

	for (i = 0; i < 200 && (val = gmem_counter(name)) != want; i++)
		usleep(50 * 1000);
	return val;
}

/* Load KVM, use a guest_memfd and edu, unload: what stays is not a leak. */
static int warm_up(struct edu *edu)
{
	const struct mem_kind kind = { "guest_memfd", 0, 2UL << 20, true };
	char *buf;

	if (system("modprobe kvm_amd"))
		return -1;
	buf = map_populated(&kind);
	if (buf == MAP_FAILED || edu_open(edu))
		return -1;
	munmap(buf, kind.size);
	close(gmem_fd);
	close(gmem_vm_fd);
	edu_close(edu);
	if (unload_when_unused("kvm_amd") || unload("kvm"))
		return -1;
	return 0;
}

TEST(unload_with_pin_outstanding)
{
	const long pending = PINNED / getpagesize();
	const struct mem_kind kind = { "guest_memfd", 0, GMEM_SIZE, true };
	long free0, free1, freed0, tables, dm4k, dm1g;
	struct edu edu = { 0 };
	char *buf;

	ASSERT_EQ(warm_up(&edu), 0) TH_LOG("warm-up cycle: %s", edu.err);
	dm4k = meminfo("DirectMap4k");
	dm1g = meminfo("DirectMap1G");
	free0 = free_kb();
	ASSERT_EQ(system("modprobe kvm_amd"), 0) TH_LOG("modprobe kvm_amd");
	ASSERT_EQ(edu_open(&edu), 0) TH_LOG("edu: %s", edu.err);

	buf = map_populated(&kind);
	ASSERT_NE(buf, MAP_FAILED) TH_LOG("guest_memfd: %s", strerror(errno));
	ASSERT_EQ(edu_dma_map(&edu, IOVA, buf, PINNED), 0);
	freed0 = gmem_counter("freed");
	ASSERT_EQ(gmem_convert(0, GMEM_SIZE, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER,
			       NULL), pending);

	ASSERT_EQ(munmap(buf, GMEM_SIZE), 0);
	close(gmem_fd);
	close(gmem_vm_fd);
	EXPECT_EQ(unload("kvm_amd"), -EWOULDBLOCK);
	EXPECT_EQ(unload("kvm"), -EWOULDBLOCK);
	EXPECT_EQ(gmem_counter("pending"), pending);

	/* The device still owns the pages it pinned. */
	EXPECT_EQ(edu_dma(&edu, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(edu_dmar_fault_seen(&edu, IOVA));

	ASSERT_EQ(edu_dma_unmap(&edu, IOVA, PINNED), 0);
	edu_close(&edu);
	/* Read before kvm_amd goes: kvm's debugfs directory goes with it. */
	EXPECT_EQ(gmem_counter_reaches("freed", freed0 + pending) - freed0, pending);
	EXPECT_EQ(gmem_counter("pending"), 0);
	EXPECT_EQ(unload_when_unused("kvm_amd"), 0);
	EXPECT_EQ(unload("kvm"), 0);

	free1 = free_kb();
	tables = direct_map_tables_kb(dm4k, dm1g);
	TH_LOG("free (MemFree + per-CPU lists): %ld kB before loading KVM, %ld kB after unloading it; direct map page tables: %ld kB",
	       free0, free1, tables);
	EXPECT_LT(labs(free1 + tables - free0), MEMFREE_SLACK_KB);
}

/*
 * The same with a hugetlb page: a 4 KiB piece of a 2 MiB page shared and
 * pinned by VFIO, converted back (pending), the VM and the guest_memfd
 * closed. The piece keeps the modules loaded and the page out of the pool;
 * the unpin puts the page back together and into the pool, whole, and the
 * modules unload.
 */
TEST(unload_with_pinned_hugetlb_piece)
{
	const size_t page = getpagesize();
	long free0, returned0;
	struct edu edu = { 0 };
	char *buf;

	free0 = hugepages_free();
	ASSERT_GE(free0, 1) TH_LOG("the boot needs a free 2 MiB hugetlb page");
	ASSERT_EQ(system("modprobe kvm_amd"), 0) TH_LOG("modprobe kvm_amd");
	ASSERT_EQ(edu_open(&edu), 0) TH_LOG("edu: %s", edu.err);

	gmem_fd = gmem_create_hugetlb_2m(SZ_2M);
	ASSERT_GE(gmem_fd, 0) TH_LOG("hugetlb guest_memfd: %s", strerror(errno));
	ASSERT_EQ(gmem_convert(0, page, false, 0, NULL), 0);
	buf = mmap(NULL, SZ_2M, PROT_READ | PROT_WRITE, MAP_SHARED, gmem_fd, 0);
	ASSERT_NE(buf, MAP_FAILED);
	memset(buf, 0x5a, page);
	ASSERT_EQ(edu_dma_map(&edu, IOVA, buf, page), 0);
	ASSERT_EQ(gmem_convert(0, page, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER, NULL), 1);
	returned0 = gmem_split_counter("merge_to_pool");

	ASSERT_EQ(munmap(buf, SZ_2M), 0);
	close(gmem_fd);
	close(gmem_vm_fd);
	EXPECT_EQ(unload("kvm_amd"), -EWOULDBLOCK);
	EXPECT_EQ(unload("kvm"), -EWOULDBLOCK);
	EXPECT_EQ(hugepages_free(), free0 - 1);
	EXPECT_EQ(edu_dma(&edu, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(edu_dmar_fault_seen(&edu, IOVA));

	ASSERT_EQ(edu_dma_unmap(&edu, IOVA, page), 0);
	edu_close(&edu);
	EXPECT_EQ(gmem_counter_reaches("pending", 0), 0);
	EXPECT_EQ(gmem_split_counter("merge_to_pool"), returned0 + 1);
	EXPECT_EQ(unload_when_unused("kvm_amd"), 0);
	EXPECT_EQ(unload("kvm"), 0);
	EXPECT_EQ(hugepages_free(), free0);
}

TEST_HARNESS_MAIN
