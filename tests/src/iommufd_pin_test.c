// SPDX-License-Identifier: GPL-2.0
/*
 * iommufd long-term pins against the CONFIG_IOMMUFD_TEST mock domain.
 *
 * An IOAS with a mock domain attached pins what IOMMU_IOAS_MAP maps
 * (FOLL_LONGTERM). For anonymous, MAP_HUGETLB and guest_memfd memory: the
 * mock domain maps exactly the user's pages, the pin keeps them out of the
 * pool after munmap(), and IOMMU_IOAS_UNMAP gives them back. For
 * guest_memfd, a conversion to private completes when the last of several
 * pinners (two IOAS mappings and gup_test) lets go, in every order, and a
 * private or pending page cannot be mapped.
 *
 * Needs a boot without a vIOMMU: the mock device refuses to attach otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/iommufd.h>

#include "kselftest_harness.h"
#include "harness_util.h"

#include <linux/falloc.h>
#include "iommufd_test.h"
#include "../../../mm/gup_test.h"

#define IOVA 0x1000000UL
#define IOVA2 0x4000000UL

FIXTURE(ioas) {
	int iommufd;
	__u32 ioas_id, stdev_id, hwpt_id;
};

FIXTURE_VARIANT(ioas) {
	struct mem_kind kind;
};

FIXTURE_VARIANT_ADD(ioas, anon_4k) {
	.kind = { "anonymous 4 KiB pages", 0, 32UL << 20 },
};

FIXTURE_VARIANT_ADD(ioas, hugetlb_2m) {
	.kind = { "MAP_HUGETLB 2 MiB pages", MAP_HUGETLB, 8UL << 20 },
};

#define GMEM_KIND { "guest_memfd shared pages", 0, 2UL << 20, true }

FIXTURE_VARIANT_ADD(ioas, guest_memfd) {
	.kind = GMEM_KIND,
};

/* An IOAS with a mock domain: without iommufd's mock domain the test fails. */
static void ioas_start(struct __test_metadata *_metadata, FIXTURE_DATA(ioas) *self,
		       const struct mem_kind *kind)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct iommu_test_cmd mock = {
		.size = sizeof(mock), .op = IOMMU_TEST_OP_MOCK_DOMAIN,
	};

	self->iommufd = open("/dev/iommu", O_RDWR);
	ASSERT_GE(self->iommufd, 0) TH_LOG("no /dev/iommu (CONFIG_IOMMUFD)");
	ASSERT_EQ(ioctl(self->iommufd, IOMMU_IOAS_ALLOC, &alloc), 0);
	self->ioas_id = alloc.out_ioas_id;
	mock.id = self->ioas_id;
	ASSERT_EQ(ioctl(self->iommufd, IOMMU_TEST_CMD, &mock), 0)
		TH_LOG("mock domain: %s (CONFIG_IOMMUFD_TEST, and no vIOMMU)", strerror(errno));
	self->stdev_id = mock.mock_domain.out_stdev_id;
	self->hwpt_id = mock.mock_domain.out_hwpt_id;
	TH_LOG("IOAS %u, mock domain hwpt %u; memory: %s",
	       self->ioas_id, self->hwpt_id, kind->name);
}

FIXTURE_SETUP(ioas)
{
	ioas_start(_metadata, self, &variant->kind);
}

FIXTURE_TEARDOWN(ioas)
{
	close(self->iommufd);
}

static int ioas_map_at(int iommufd, __u32 ioas, unsigned long iova,
		      void *buf, size_t size)
{
	struct iommu_ioas_map map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas,
		.user_va = (uintptr_t)buf,
		.length = size,
		.iova = iova,
	};

	return ioctl(iommufd, IOMMU_IOAS_MAP, &map);
}

static int ioas_unmap_at(int iommufd, __u32 ioas, unsigned long iova, size_t size)
{
	struct iommu_ioas_unmap unmap = {
		.size = sizeof(unmap), .ioas_id = ioas, .iova = iova, .length = size,
	};

	return ioctl(iommufd, IOMMU_IOAS_UNMAP, &unmap);
}

static int ioas_map(FIXTURE_DATA(ioas) *self, void *buf, size_t size)
{
	return ioas_map_at(self->iommufd, self->ioas_id, IOVA, buf, size);
}

static int ioas_unmap(FIXTURE_DATA(ioas) *self, size_t size)
{
	return ioas_unmap_at(self->iommufd, self->ioas_id, IOVA, size);
}

/* The mock domain translates IOVA to exactly the pages behind @buf. */
static int domain_maps(FIXTURE_DATA(ioas) *self, void *buf, size_t size)
{
	struct iommu_test_cmd check = {
		.size = sizeof(check), .op = IOMMU_TEST_OP_MD_CHECK_MAP,
		.id = self->hwpt_id,
		.check_map = { .iova = IOVA, .length = size, .uptr = (uintptr_t)buf },
	};

	return ioctl(self->iommufd, IOMMU_TEST_CMD, &check);
}

TEST_F(ioas, map_pins_the_users_pages)
{
	size_t size = variant->kind.size;
	char *buf = map_populated(&variant->kind);

	ASSERT_NE(buf, MAP_FAILED);
	ASSERT_EQ(ioas_map(self, buf, size), 0);
	EXPECT_EQ(domain_maps(self, buf, size), 0);
	ASSERT_EQ(ioas_unmap(self, size), 0);
	ASSERT_EQ(munmap(buf, size), 0);
}

/* munmap() leaves the pinned pages in use; IOMMU_IOAS_UNMAP frees them. */
TEST_F(ioas, pin_holds_pages_until_unmap)
{
	const struct mem_kind *kind = &variant->kind;
	bool huge = kind->mmap_flags & MAP_HUGETLB;
	long npages = kind->size / getpagesize();
	long free0 = hugepages_free(), pins0 = pins_held();
	char *buf = map_populated(kind);

	ASSERT_NE(buf, MAP_FAILED);
	ASSERT_EQ(ioas_map(self, buf, kind->size), 0);
	EXPECT_EQ(pins_held() - pins0, npages);
	ASSERT_EQ(munmap(buf, kind->size), 0);
	EXPECT_EQ(pins_held() - pins0, npages);
	if (huge)
		EXPECT_EQ(hugepages_free(), free0 - (long)(kind->size / SZ_2M));

	ASSERT_EQ(ioas_unmap(self, kind->size), 0);
	EXPECT_EQ(pins_held(), pins0);
	if (huge)
		EXPECT_EQ(hugepages_free(), free0);
}

/* Three long-term pinners of the same pages; index 2 is gup_test's. */
struct pinners {
	int iommufd, gup_test;
	__u32 ioas;
	void *buf;
	size_t size;
};

static int pinner_pin(struct pinners *p, int which)
{
	struct pin_longterm_test args = {
		.addr = (uintptr_t)p->buf, .size = p->size,
		.flags = PIN_LONGTERM_TEST_FLAG_USE_WRITE,
	};

	if (which == 2)
		return ioctl(p->gup_test, PIN_LONGTERM_TEST_START, &args);
	return ioas_map_at(p->iommufd, p->ioas, which ? IOVA2 : IOVA, p->buf, p->size);
}

static int pinner_unpin(struct pinners *p, int which)
{
	if (which == 2)
		return ioctl(p->gup_test, PIN_LONGTERM_TEST_STOP);
	return ioas_unmap_at(p->iommufd, p->ioas, which ? IOVA2 : IOVA, p->size);
}

/*
 * For each order of unpinning: [@offset, + p->size) of gmem_fd, at p->buf,
 * shared and pinned three times, converted to private with DEFER; pending
 * until the last pinner lets go, whichever that is. With @merges, the
 * range is a piece of a hugetlb page, which must be merged on the last
 * unpin, not before.
 */
static void every_unpin_order(struct __test_metadata *_metadata,
			      struct pinners *p, size_t offset, bool merges)
{
	const long npages = p->size / getpagesize();
	const uint64_t defer = KVM_SET_MEMORY_ATTRIBUTES2_DEFER;
	static const int orders[][3] = {
		{ 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
		{ 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 },
	};
	long pins0 = pins_held(), merged;
	int o, i;

	for (o = 0; o < ARRAY_SIZE(orders); o++) {
		const int *order = orders[o];

		TH_LOG("unpin order: %d %d %d", order[0], order[1], order[2]);
		ASSERT_EQ(gmem_convert(offset, p->size, false, 0, NULL), 0);
		memset(p->buf, o, p->size);
		for (i = 0; i < 3; i++)
			ASSERT_EQ(pinner_pin(p, i), 0);
		ASSERT_EQ(gmem_convert(offset, p->size, true, defer, NULL), npages);
		merged = gmem_split_counter("merge_in_place");

		for (i = 0; i < 2; i++) {
			ASSERT_EQ(pinner_unpin(p, order[i]), 0);
			EXPECT_EQ(gmem_convert(offset, p->size, true, defer, NULL),
				  npages);
			EXPECT_FALSE(host_can_read(p->buf));
		}
		if (merges)
			EXPECT_EQ(gmem_split_counter("merge_in_place"), merged);
		ASSERT_EQ(pinner_unpin(p, order[2]), 0);
		EXPECT_EQ(pins_held(), pins0);
		EXPECT_EQ(gmem_convert(offset, p->size, true,
				       defer | KVM_SET_MEMORY_ATTRIBUTES2_WAIT, NULL), 0);
		EXPECT_FALSE(host_can_read(p->buf));
		if (merges)
			EXPECT_EQ(gmem_split_counter("merge_in_place"), merged + 1);
	}

	/* The content went through every conversion. */
	ASSERT_EQ(gmem_convert(offset, p->size, false, 0, NULL), 0);
	EXPECT_EQ(((char *)p->buf)[p->size - 1], ARRAY_SIZE(orders) - 1);
}

static void pinners_start(struct __test_metadata *_metadata,
			  FIXTURE_DATA(ioas) *ioas, struct pinners *p,
			  const struct mem_kind *kind)
{
	ioas_start(_metadata, ioas, kind);
	p->iommufd = ioas->iommufd;
	p->ioas = ioas->ioas_id;
	p->gup_test = open("/sys/kernel/debug/gup_test", O_RDWR);
	ASSERT_GE(p->gup_test, 0) TH_LOG("gup_test: CONFIG_GUP_TEST and debugfs");
}

/*
 * Shared to private with three pinners of every page: the pages stay
 * pending until the last pinner lets go, whichever that is.
 */
TEST(conversion_waits_for_every_pinner)
{
	const struct mem_kind kind = GMEM_KIND;
	FIXTURE_DATA(ioas) ioas;
	struct pinners p = { .size = kind.size };

	pinners_start(_metadata, &ioas, &p, &kind);
	p.buf = map_populated(&kind);
	ASSERT_NE(p.buf, MAP_FAILED) TH_LOG("guest_memfd: %s", strerror(errno));
	every_unpin_order(_metadata, &p, 0, false);
	close(p.gup_test);
	close(ioas.iommufd);
}

/*
 * IOMMU_IOAS_MAP of a range with a private page, or with a page whose
 * conversion is pending (another IOAS mapping holds it), fails with EFAULT
 * and pins nothing; the shared page alone maps.
 */
TEST(private_and_pending_pages_do_not_map)
{
	const struct mem_kind kind = GMEM_KIND;
	size_t page = getpagesize();
	long pins0 = pins_held();
	FIXTURE_DATA(ioas) ioas;
	char *buf;

	ioas_start(_metadata, &ioas, &kind);
	buf = map_populated(&kind);
	ASSERT_NE(buf, MAP_FAILED) TH_LOG("guest_memfd: %s", strerror(errno));
	ASSERT_EQ(gmem_convert(page, page, true, 0, NULL), 0);
	ASSERT_EQ(ioas_map_at(ioas.iommufd, ioas.ioas_id, IOVA2, buf + 2 * page, page), 0);
	ASSERT_EQ(gmem_convert(2 * page, page, true,
			       KVM_SET_MEMORY_ATTRIBUTES2_DEFER, NULL), 1);

	EXPECT_EQ(ioas_map_at(ioas.iommufd, ioas.ioas_id, IOVA, buf, 2 * page), -1);
	EXPECT_EQ(errno, EFAULT);
	EXPECT_EQ(ioas_map_at(ioas.iommufd, ioas.ioas_id, IOVA, buf + 2 * page, page), -1);
	EXPECT_EQ(errno, EFAULT);
	EXPECT_EQ(pins_held() - pins0, 1);

	ASSERT_EQ(ioas_map_at(ioas.iommufd, ioas.ioas_id, IOVA, buf, page), 0);
	EXPECT_EQ(pins_held() - pins0, 2);
	ASSERT_EQ(ioas_unmap_at(ioas.iommufd, ioas.ioas_id, IOVA, page), 0);
	ASSERT_EQ(ioas_unmap_at(ioas.iommufd, ioas.ioas_id, IOVA2, page), 0);
	EXPECT_EQ(pins_held(), pins0);
	EXPECT_EQ(gmem_convert(2 * page, page, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER |
			       KVM_SET_MEMORY_ATTRIBUTES2_WAIT, NULL), 0);
	ASSERT_EQ(munmap(buf, kind.size), 0);
	close(ioas.iommufd);
}

/*
 * The same with one 4 KiB piece of a private 2 MiB hugetlb guest_memfd
 * page: the page stays split until the last pinner lets go, and the pool
 * gets it back whole.
 */
TEST(hugetlb_piece_merges_after_every_pinner)
{
	const struct mem_kind kind = { "a hugetlb guest_memfd piece" };
	size_t page = getpagesize();
	long free0 = hugepages_free();
	FIXTURE_DATA(ioas) ioas;
	struct pinners p = { .size = page };
	char *map;

	ASSERT_GE(gmem_split_counter("merge_in_place"), 0) TH_LOG("kvm/gmem_* in debugfs");
	pinners_start(_metadata, &ioas, &p, &kind);
	gmem_fd = gmem_create_hugetlb_2m(SZ_2M);
	ASSERT_GE(gmem_fd, 0) TH_LOG("hugetlb guest_memfd: %s", strerror(errno));
	ASSERT_EQ(fallocate(gmem_fd, FALLOC_FL_KEEP_SIZE, 0, SZ_2M), 0);
	map = mmap(NULL, SZ_2M, PROT_READ | PROT_WRITE, MAP_SHARED, gmem_fd, 0);
	ASSERT_NE(map, MAP_FAILED);
	p.buf = map + page;

	every_unpin_order(_metadata, &p, page, true);
	ASSERT_EQ(munmap(map, SZ_2M), 0);
	close(gmem_fd);
	EXPECT_EQ(hugepages_free(), free0);
	close(gmem_vm_fd);
	close(p.gup_test);
	close(ioas.iommufd);
}

TEST_HARNESS_MAIN
