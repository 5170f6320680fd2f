// SPDX-License-Identifier: GPL-2.0
/*
 * Splitting and merging the hugetlb pages of a guest_memfd, for `make
 * bench`, against a hugetlb page's allocation and free. For each page size
 * (2 MiB and 1 GiB: the boot needs two pages of each) prints
 *   bench: <name>_<size>_ns <nanoseconds, median of the rounds>
 * for
 *   hugetlb_roundtrip  mmap(MAP_HUGETLB), touch, munmap: a page from the
 *                      pool, zeroed, and back;
 *   gmem_split         one 4 KiB page of a private hugetlb guest_memfd page
 *                      converted to shared (1 GiB: into 2 MiB pieces, one
 *                      of them into 4 KiB ones);
 *   gmem_merge         converted back to private: the page whole again;
 *   gmem_unpin_merge   the shared piece pinned (gup_test FOLL_LONGTERM),
 *                      converted with DEFER, from the start of the unpin to
 *                      the return of a WAIT in another thread: the merge on
 *                      the last reference, in the release worker;
 *   hugetlb_pool_cycle (HVO only) one free page of the pool given back to
 *                      the page allocator and taken again (nr_hugepages):
 *                      hugetlb's own vmemmap restore and optimization.
 * First with the pool's pages as the boot made them (HVO off), then, as
 * <name>_<size>_hvo_ns, with vm.hugetlb_optimize_vmemmap on and the pools
 * refilled, so that a split restores the page's vmemmap and a merge
 * optimizes it again. Exits 4 (skip) on a kernel without hugetlb
 * guest_memfd, such as the base.
 *
 *   hugetlb_split_bench [rounds]
 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"

#define MAX_ROUNDS	32
#define SZ_1G		(1UL << 30)

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static bool hvo;

static void report(const char *what, unsigned long size, long long *v,
		   int rounds)
{
	qsort(v, rounds, sizeof(*v), cmp_ll);
	printf("bench: %s_%s%s_ns %lld\n", what, size == SZ_1G ? "1G" : "2M",
	       hvo ? "_hvo" : "", v[rounds / 2]);
}

static void write_long(const char *path, long val)
{
	FILE *f = fopen(path, "w");

	if (!f || fprintf(f, "%ld", val) < 0 || fclose(f))
		die(path);
}

static void nr_hugepages_path(char *path, size_t len, unsigned long size)
{
	snprintf(path, len, "/sys/kernel/mm/hugepages/hugepages-%lukB/nr_hugepages",
		 size >> 10);
}

static long long pool_cycle(unsigned long size)
{
	long long start = now_ns();
	char path[128];
	long nr;

	nr_hugepages_path(path, sizeof(path), size);
	nr = file_long(path);
	write_long(path, nr - 1);
	write_long(path, nr);
	if (file_long(path) != nr)
		die("take the pool's page again");
	return now_ns() - start;
}

static long memmap_pages(void)
{
	return vmstat("nr_memmap_pages") + vmstat("nr_memmap_boot_pages");
}

/* HVO on, and every pool page given back and taken again, optimized. */
static void optimize_pools(const unsigned long *sizes, int n)
{
	long memmap = memmap_pages(), nr;
	char path[128];
	int i;

	write_long("/proc/sys/vm/hugetlb_optimize_vmemmap", 1);
	for (i = 0; i < n; i++) {
		nr_hugepages_path(path, sizeof(path), sizes[i]);
		nr = file_long(path);
		write_long(path, 0);
		write_long(path, nr);
		if (file_long(path) != nr)
			die("refill the pool with HVO on");
	}
	if (memmap_pages() >= memmap)
		die("HVO saved no vmemmap page");
	hvo = true;
}

static long long hugetlb_roundtrip(unsigned long size)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB |
		    (size == SZ_1G ? 30 << MAP_HUGE_SHIFT : 21 << MAP_HUGE_SHIFT);
	long long start = now_ns();
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);

	if (p == MAP_FAILED)
		die("mmap(MAP_HUGETLB)");
	p[0] = 1;
	munmap(p, size);
	return now_ns() - start;
}

/* A hugetlb guest_memfd of one page, host-mappable, mapped at *@mem. */
static int gmem_hugetlb(unsigned long size, char **mem)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
			 GUEST_MEMFD_FLAG_HUGETLB,
		.huge_page_size_log2 = size == SZ_1G ? 30 : 21,
	};
	int fd = gmem_create_args(&args);

	if (fd < 0)
		return -1;
	*mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*mem == MAP_FAILED)
		die("mmap(guest_memfd)");
	return fd;
}

static long long convert_timed(int fd, size_t size, bool private,
			       uint64_t flags, int want)
{
	return gmem_convert_timed(fd, 0, size, private, flags, want);
}

struct waiter {
	int fd;
	long long done;
};

static void *wait_merged(void *arg)
{
	struct waiter *w = arg;

	convert_timed(w->fd, getpagesize(), true,
		      KVM_SET_MEMORY_ATTRIBUTES2_DEFER |
		      KVM_SET_MEMORY_ATTRIBUTES2_WAIT, 0);
	w->done = now_ns();
	return NULL;
}

/* The first page shared and pinned, pending: from unpin to merged. */
static long long unpin_to_merged(int fd, char *mem, int gup)
{
	struct pin_longterm_test args = {
		.addr = (uintptr_t)mem, .size = getpagesize(),
		.flags = PIN_LONGTERM_TEST_FLAG_USE_WRITE,
	};
	struct waiter w = { .fd = fd };

	convert_timed(fd, getpagesize(), false, 0, 0);
	if (ioctl(gup, PIN_LONGTERM_TEST_START, &args))
		die("PIN_LONGTERM_TEST_START");
	convert_timed(fd, getpagesize(), true,
		      KVM_SET_MEMORY_ATTRIBUTES2_DEFER, 1);
	return unpin_to_done(gup, wait_merged, &w, &w.done);
}

static void bench_size(unsigned long size, int rounds, int gup)
{
	long long roundtrip[MAX_ROUNDS], split[MAX_ROUNDS];
	long long merge[MAX_ROUNDS], unpin_merge[MAX_ROUNDS];
	long long cycle[MAX_ROUNDS];
	char *mem;
	int fd, r;

	fd = gmem_hugetlb(size, &mem);
	if (fd < 0)
		die("create a hugetlb guest_memfd");
	/* Every piece prepared by the host, then the page whole and private. */
	memset(mem, 0x5a, size);
	convert_timed(fd, size, true, 0, 0);

	for (r = 0; r < rounds; r++) {
		roundtrip[r] = hugetlb_roundtrip(size);
		split[r] = convert_timed(fd, getpagesize(), false, 0, 0);
		merge[r] = convert_timed(fd, getpagesize(), true, 0, 0);
		unpin_merge[r] = unpin_to_merged(fd, mem, gup);
		if (hvo)
			cycle[r] = pool_cycle(size);
	}
	munmap(mem, size);
	close(fd);
	close(gmem_vm_fd);

	report("hugetlb_roundtrip", size, roundtrip, rounds);
	report("gmem_split", size, split, rounds);
	report("gmem_merge", size, merge, rounds);
	report("gmem_unpin_merge", size, unpin_merge, rounds);
	if (hvo)
		report("hugetlb_pool_cycle", size, cycle, rounds);
}

static void bench_sizes(const unsigned long *sizes, int rounds, int gup)
{
	int i;

	for (i = 0; i < 2; i++)
		bench_size(sizes[i], i ? (rounds + 2) / 3 : rounds, gup);
}

int main(int argc, char **argv)
{
	unsigned long sizes[] = { SZ_2M, SZ_1G };
	int rounds = argc > 1 ? atoi(argv[1]) : 9;
	char path[128];
	int gup, i, kvm;

	if (rounds < 1 || rounds > MAX_ROUNDS)
		rounds = 9;
	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0)
		die("/dev/kvm");
	if (ioctl(kvm, KVM_CHECK_EXTENSION,
		  KVM_CAP_GUEST_MEMFD_HUGETLB_SIZES) <= 0) {
		printf("hugetlb_split_bench: no hugetlb guest_memfd here: skipped\n");
		return 4;
	}
	close(kvm);
	gup = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (gup < 0)
		die("/sys/kernel/debug/gup_test");

	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path),
			 "/sys/kernel/mm/hugepages/hugepages-%lukB/free_hugepages",
			 sizes[i] >> 10);
		/* One page for the guest_memfd, one for the round trip. */
		if (file_long(path) < 2)
			die("the boot needs two free 2 MiB and two 1 GiB pages");
	}
	bench_sizes(sizes, rounds, gup);
	optimize_pools(sizes, 2);
	bench_sizes(sizes, rounds, gup);
	return 0;
}
