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
 * keeps writing the pages, and a private or pending page cannot be mapped;
 * a piece of a hugetlb guest_memfd page shared with the device keeps the
 * page split until VFIO_IOMMU_UNMAP_DMA.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "harness_util.h"
#include "edu.h"

#include <linux/falloc.h>

#define IOVA		0x1000000UL	/* below EDU_IOVA_LIMIT */

FIXTURE(edu) {
	struct edu edu;
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

#define GMEM_KIND { "guest_memfd shared pages", 0, 2UL << 20, true }

FIXTURE_VARIANT_ADD(edu, guest_memfd) {
	.kind = GMEM_KIND,
};

/* Opens edu for a test: without it (QEMU -device edu) the test fails. */
static void edu_start(struct __test_metadata *_metadata, struct edu *edu,
		      const struct mem_kind *kind)
{
	ASSERT_EQ(edu_open(edu), 0) TH_LOG("%s", edu->err);
	TH_LOG("edu %s in IOMMU group %d; memory: %s", edu->bdf,
	       edu->iommu_group, kind->name);
}

FIXTURE_SETUP(edu)
{
	edu_start(_metadata, &self->edu, &variant->kind);
}

FIXTURE_TEARDOWN(edu)
{
	edu_close(&self->edu);
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
	ASSERT_EQ(edu_dma_map(&self->edu, IOVA, buf, size), 0);

	ASSERT_EQ(edu_dma(&self->edu, IOVA, EDU_BUF, EDU_XFER, 0), 0);
	ASSERT_EQ(edu_dma(&self->edu, EDU_BUF, IOVA + dst, EDU_XFER, 1), 0);
	EXPECT_EQ(memcmp(buf, buf + dst, EDU_XFER), 0);
	EXPECT_FALSE(edu_dmar_fault_seen(&self->edu, IOVA));

	ASSERT_EQ(edu_dma_unmap(&self->edu, IOVA, size), 0);
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
	ASSERT_EQ(edu_dma_map(&self->edu, IOVA, buf, kind->size), 0);
	EXPECT_EQ(pins_held() - pins0, npages);
	ASSERT_EQ(munmap(buf, kind->size), 0);
	EXPECT_EQ(pins_held() - pins0, npages);
	if (huge)
		EXPECT_EQ(hugepages_free(), free0 - (long)(kind->size / SZ_2M));
	/* The pages are still the device's to write. */
	ASSERT_EQ(edu_dma(&self->edu, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(edu_dmar_fault_seen(&self->edu, IOVA));

	ASSERT_EQ(edu_dma_unmap(&self->edu, IOVA, kind->size), 0);
	EXPECT_EQ(pins_held(), pins0);
	if (huge)
		EXPECT_EQ(hugepages_free(), free0);
}

/* Once unmapped, the IOVA is gone: the device's DMA to it faults. */
TEST_F(edu, unmapped_iova_faults)
{
	char *buf = map_populated(&variant->kind);

	ASSERT_NE(buf, MAP_FAILED);
	ASSERT_EQ(edu_dma_map(&self->edu, IOVA, buf, variant->kind.size), 0);
	ASSERT_EQ(edu_dma(&self->edu, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(edu_dmar_fault_seen(&self->edu, IOVA));
	ASSERT_EQ(edu_dma_unmap(&self->edu, IOVA, variant->kind.size), 0);

	ASSERT_EQ(edu_dma(&self->edu, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_TRUE(edu_dmar_fault_seen(&self->edu, IOVA));
	ASSERT_EQ(munmap(buf, variant->kind.size), 0);
}

/*
 * Shared to private while the device holds the pages: EAGAIN without
 * KVM_SET_MEMORY_ATTRIBUTES2_DEFER; with it the pages are pending, the host
 * cannot touch them but the device still can, and the conversion completes
 * when VFIO_IOMMU_UNMAP_DMA drops the pins, with what the device wrote.
 */
TEST(conversion_completes_on_dma_unmap)
{
	const struct mem_kind kind = GMEM_KIND;
	size_t size = kind.size, page = getpagesize();
	long npages = size / page, pins0 = pins_held();
	struct edu edu = { 0 };
	uint64_t error = -1;
	char *buf;
	int i;

	edu_start(_metadata, &edu, &kind);
	buf = map_populated(&kind);
	ASSERT_NE(buf, MAP_FAILED) TH_LOG("guest_memfd: %s", strerror(errno));
	for (i = 0; i < EDU_XFER; i++)
		buf[page + i] = (char)(i * 3 + 1);
	ASSERT_EQ(edu_dma_map(&edu, IOVA, buf, size), 0);
	ASSERT_EQ(edu_dma(&edu, IOVA + page, EDU_BUF, EDU_XFER, 0), 0);

	ASSERT_EQ(gmem_convert(0, size, true, 0, &error), -1);
	EXPECT_EQ(errno, EAGAIN);
	EXPECT_EQ(error, 0);
	EXPECT_TRUE(host_can_read(buf));

	EXPECT_EQ(gmem_convert(0, size, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER, NULL),
		  npages);
	EXPECT_FALSE(host_can_read(buf));
	EXPECT_EQ(pins_held() - pins0, npages);

	/* The pins stay valid: the device writes a pending page. */
	ASSERT_EQ(edu_dma(&edu, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_FALSE(edu_dmar_fault_seen(&edu, IOVA));

	ASSERT_EQ(edu_dma_unmap(&edu, IOVA, size), 0);
	EXPECT_EQ(pins_held(), pins0);
	EXPECT_EQ(gmem_convert(0, size, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER |
			       KVM_SET_MEMORY_ATTRIBUTES2_WAIT, NULL), 0);
	EXPECT_FALSE(host_can_read(buf));
	ASSERT_EQ(edu_dma(&edu, EDU_BUF, IOVA, EDU_XFER, 1), 0);
	EXPECT_TRUE(edu_dmar_fault_seen(&edu, IOVA));

	/* Back to shared: the page holds what the device wrote while pending. */
	ASSERT_EQ(gmem_convert(0, size, false, 0, NULL), 0);
	ASSERT_TRUE(host_can_read(buf));
	EXPECT_EQ(memcmp(buf, buf + page, EDU_XFER), 0);
	ASSERT_EQ(munmap(buf, size), 0);
	edu_close(&edu);
}

/*
 * VFIO_IOMMU_MAP_DMA of a range with a private page, or with a page whose
 * conversion is pending (the device holds it at another IOVA), fails with
 * EFAULT and pins nothing; the device cannot reach either page through
 * the IOVA; the shared page alone maps.
 */
TEST(private_and_pending_pages_do_not_map)
{
	const struct mem_kind kind = GMEM_KIND;
	size_t page = getpagesize();
	long pins0 = pins_held();
	struct edu edu = { 0 };
	char *buf;

	edu_start(_metadata, &edu, &kind);
	buf = map_populated(&kind);
	ASSERT_NE(buf, MAP_FAILED) TH_LOG("guest_memfd: %s", strerror(errno));
	ASSERT_EQ(gmem_convert(page, page, true, 0, NULL), 0);
	ASSERT_EQ(edu_dma_map(&edu, IOVA + 4 * page, buf + 2 * page, page), 0);
	ASSERT_EQ(gmem_convert(2 * page, page, true,
			       KVM_SET_MEMORY_ATTRIBUTES2_DEFER, NULL), 1);

	EXPECT_EQ(edu_dma_map(&edu, IOVA, buf, 2 * page), -EFAULT);
	EXPECT_EQ(edu_dma_map(&edu, IOVA + page, buf + 2 * page, page), -EFAULT);
	EXPECT_EQ(pins_held() - pins0, 1);
	ASSERT_EQ(edu_dma(&edu, EDU_BUF, IOVA + page, EDU_XFER, 1), 0);
	EXPECT_TRUE(edu_dmar_fault_seen(&edu, IOVA + page));

	ASSERT_EQ(edu_dma_map(&edu, IOVA, buf, page), 0);
	EXPECT_EQ(pins_held() - pins0, 2);
	ASSERT_EQ(edu_dma_unmap(&edu, IOVA, page), 0);
	ASSERT_EQ(edu_dma_unmap(&edu, IOVA + 4 * page, page), 0);
	EXPECT_EQ(pins_held(), pins0);
	EXPECT_EQ(gmem_convert(2 * page, page, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER |
			       KVM_SET_MEMORY_ATTRIBUTES2_WAIT, NULL), 0);
	ASSERT_EQ(munmap(buf, kind.size), 0);
	edu_close(&edu);
}

/*
 * A 4 KiB page of a 2 MiB hugetlb guest_memfd page shared with the device:
 * the page is split for it, and converting it back is pending until
 * VFIO_IOMMU_UNMAP_DMA, which puts the page back together, with what the
 * device wrote; the pool gets it back whole when the file goes.
 */
TEST(hugetlb_piece_merges_on_dma_unmap)
{
	size_t page = getpagesize();
	long free0 = hugepages_free(), pins0 = pins_held();
	long split0 = gmem_split_counter("split_4k"), merged0 = gmem_split_counter("merge_in_place");
	struct edu edu = { 0 };
	char *buf;
	int i;

	ASSERT_GE(split0, 0) TH_LOG("no kvm/gmem_split_4k in debugfs");
	edu_start(_metadata, &edu, &(struct mem_kind){ "a hugetlb guest_memfd piece" });
	gmem_fd = gmem_create_hugetlb_2m(SZ_2M);
	ASSERT_GE(gmem_fd, 0) TH_LOG("hugetlb guest_memfd: %s", strerror(errno));
	ASSERT_EQ(fallocate(gmem_fd, FALLOC_FL_KEEP_SIZE, 0, SZ_2M), 0);
	EXPECT_EQ(hugepages_free(), free0 - 1);

	ASSERT_EQ(gmem_convert(page, page, false, 0, NULL), 0);
	EXPECT_EQ(gmem_split_counter("split_4k"), split0 + 1);
	buf = mmap(NULL, SZ_2M, PROT_READ | PROT_WRITE, MAP_SHARED, gmem_fd, 0);
	ASSERT_NE(buf, MAP_FAILED);
	for (i = 0; i < EDU_XFER; i++)
		buf[page + i] = (char)(i * 5 + 1);
	ASSERT_EQ(edu_dma_map(&edu, IOVA, buf + page, page), 0);
	EXPECT_EQ(pins_held() - pins0, 1);
	ASSERT_EQ(edu_dma(&edu, IOVA, EDU_BUF, EDU_XFER, 0), 0);

	EXPECT_EQ(gmem_convert(page, page, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER, NULL), 1);
	EXPECT_FALSE(host_can_read(buf + page));
	/* The device writes the pending page back, shifted by 16 bytes. */
	ASSERT_EQ(edu_dma(&edu, EDU_BUF, IOVA + 16, EDU_XFER - 16, 1), 0);
	EXPECT_FALSE(edu_dmar_fault_seen(&edu, IOVA));
	EXPECT_EQ(gmem_split_counter("merge_in_place"), merged0);

	ASSERT_EQ(edu_dma_unmap(&edu, IOVA, page), 0);
	EXPECT_EQ(gmem_convert(page, page, true, KVM_SET_MEMORY_ATTRIBUTES2_WAIT, NULL), 0);
	EXPECT_EQ(gmem_split_counter("merge_in_place"), merged0 + 1);
	EXPECT_EQ(pins_held(), pins0);

	/* Shared again (split again): the device's bytes survived the merge. */
	ASSERT_EQ(gmem_convert(page, page, false, 0, NULL), 0);
	ASSERT_TRUE(host_can_read(buf + page));
	for (i = 0; i < EDU_XFER - 16; i++)
		ASSERT_EQ(buf[page + 16 + i], (char)(i * 5 + 1)) TH_LOG("byte %d", i);

	ASSERT_EQ(munmap(buf, SZ_2M), 0);
	close(gmem_fd);
	EXPECT_EQ(hugepages_free(), free0);
	edu_close(&edu);
}

TEST_HARNESS_MAIN
