// SPDX-License-Identifier: GPL-2.0
/*
 * iommufd long-term pins against the CONFIG_IOMMUFD_TEST mock domain.
 *
 * An IOAS with a mock domain attached pins what IOMMU_IOAS_MAP maps
 * (FOLL_LONGTERM). For anonymous, MAP_HUGETLB and guest_memfd memory: the
 * mock domain maps exactly the user's pages, the pin keeps them out of the
 * pool after munmap(), and IOMMU_IOAS_UNMAP gives them back. For
 * guest_memfd, a conversion to private completes when the last of several
 * pinners (two IOAS mappings and gup_test) lets go, in every order.
 *
 * Needs a boot without a vIOMMU: the mock device refuses to attach otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/iommufd.h>

#include "kselftest_harness.h"
#include "harness_util.h"
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
 * Shared to private with three pinners of every page: the pages stay
 * pending until the last pinner lets go, whichever that is.
 */
TEST(conversion_waits_for_every_pinner)
{
	const struct mem_kind kind = GMEM_KIND;
	const long npages = kind.size / getpagesize();
	const uint64_t defer = KVM_SET_MEMORY_ATTRIBUTES2_DEFER;
	long pins0 = pins_held();
	FIXTURE_DATA(ioas) ioas;
	struct pinners p = { .size = kind.size };
	static const int orders[][3] = {
		{ 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
		{ 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 },
	};
	int o, i;

	ioas_start(_metadata, &ioas, &kind);
	p.iommufd = ioas.iommufd;
	p.ioas = ioas.ioas_id;
	p.gup_test = open("/sys/kernel/debug/gup_test", O_RDWR);
	ASSERT_GE(p.gup_test, 0) TH_LOG("gup_test: CONFIG_GUP_TEST and debugfs");
	p.buf = map_populated(&kind);
	ASSERT_NE(p.buf, MAP_FAILED) TH_LOG("guest_memfd: %s", strerror(errno));

	for (o = 0; o < ARRAY_SIZE(orders); o++) {
		const int *order = orders[o];

		TH_LOG("unpin order: %d %d %d", order[0], order[1], order[2]);
		ASSERT_EQ(gmem_convert(0, p.size, false, 0, NULL), 0);
		memset(p.buf, o, p.size);
		for (i = 0; i < 3; i++)
			ASSERT_EQ(pinner_pin(&p, i), 0);
		ASSERT_EQ(gmem_convert(0, p.size, true, defer, NULL), npages);

		for (i = 0; i < 2; i++) {
			ASSERT_EQ(pinner_unpin(&p, order[i]), 0);
			EXPECT_EQ(gmem_convert(0, p.size, true, defer, NULL), npages);
			EXPECT_FALSE(host_can_read(p.buf));
		}
		ASSERT_EQ(pinner_unpin(&p, order[2]), 0);
		EXPECT_EQ(pins_held(), pins0);
		EXPECT_EQ(gmem_convert(0, p.size, true,
				       defer | KVM_SET_MEMORY_ATTRIBUTES2_WAIT, NULL), 0);
		EXPECT_FALSE(host_can_read(p.buf));
	}

	/* The content went through every conversion. */
	ASSERT_EQ(gmem_convert(0, p.size, false, 0, NULL), 0);
	EXPECT_EQ(((char *)p.buf)[p.size - 1], ARRAY_SIZE(orders) - 1);
	close(p.gup_test);
	close(ioas.iommufd);
}

TEST_HARNESS_MAIN
