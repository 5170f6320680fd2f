// SPDX-License-Identifier: GPL-2.0
/*
 * iommufd long-term pins against the CONFIG_IOMMUFD_TEST mock domain.
 *
 * An IOAS with a mock domain attached pins what IOMMU_IOAS_MAP maps
 * (FOLL_LONGTERM). For anonymous and MAP_HUGETLB memory: the mock domain
 * maps exactly the user's pages, the pin keeps them out of the pool after
 * munmap(), and IOMMU_IOAS_UNMAP gives them back.
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

#define IOVA 0x1000000UL

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

FIXTURE_SETUP(ioas)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct iommu_test_cmd mock = {
		.size = sizeof(mock), .op = IOMMU_TEST_OP_MOCK_DOMAIN,
	};

	self->iommufd = open("/dev/iommu", O_RDWR);
	if (self->iommufd < 0)
		SKIP(return, "no /dev/iommu (CONFIG_IOMMUFD)");
	ASSERT_EQ(ioctl(self->iommufd, IOMMU_IOAS_ALLOC, &alloc), 0);
	self->ioas_id = alloc.out_ioas_id;
	mock.id = self->ioas_id;
	ASSERT_EQ(ioctl(self->iommufd, IOMMU_TEST_CMD, &mock), 0)
		TH_LOG("mock domain: %s (CONFIG_IOMMUFD_TEST, and no vIOMMU)", strerror(errno));
	self->stdev_id = mock.mock_domain.out_stdev_id;
	self->hwpt_id = mock.mock_domain.out_hwpt_id;
	TH_LOG("IOAS %u, mock domain hwpt %u; memory: %s",
	       self->ioas_id, self->hwpt_id, variant->kind.name);
}

FIXTURE_TEARDOWN(ioas)
{
	close(self->iommufd);
}

static int ioas_map(FIXTURE_DATA(ioas) *self, void *buf, size_t size)
{
	struct iommu_ioas_map map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = self->ioas_id,
		.user_va = (uintptr_t)buf,
		.length = size,
		.iova = IOVA,
	};

	return ioctl(self->iommufd, IOMMU_IOAS_MAP, &map);
}

static int ioas_unmap(FIXTURE_DATA(ioas) *self, size_t size)
{
	struct iommu_ioas_unmap unmap = {
		.size = sizeof(unmap), .ioas_id = self->ioas_id,
		.iova = IOVA, .length = size,
	};

	return ioctl(self->iommufd, IOMMU_IOAS_UNMAP, &unmap);
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

TEST_HARNESS_MAIN
