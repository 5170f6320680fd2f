// SPDX-License-Identifier: GPL-2.0
/*
 * How guest_memfd conversion scales, for `make bench` (and by hand):
 *
 *   convert_scale [max_gib]
 *
 * For a large guest_memfd that is mostly not allocated (1, 16 and 64 GiB,
 * up to max_gib), converting the whole file to private only changes state:
 * print the time of that conversion, of the conversion back, and the kernel
 * memory its state took, in bytes per GiB converted (radix_tree_node and
 * maple_node slab objects, from /proc/slabinfo: boot with slab_nomerge so
 * that they are counted apart). The worst case follows: every other 4 KiB
 * page of 64 MiB converted, one call each. Then completion of pending
 * conversions: two guest_memfds with 16 MiB each pending under a gup_test
 * FOLL_LONGTERM pin, unpinned at once, against one alone (time from the
 * unpin to the return of both WAITs).
 *
 * Prints "bench: <name> <value>" lines; exits 4 on a kernel without
 * in-place conversion (the base).
 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"

#define SZ_1G		(1UL << 30)
#define SZ_16M		(16UL << 20)
#define SZ_64M		(64UL << 20)

/* Bytes of xarray and maple tree nodes allocated system-wide. */
static long long state_bytes(void)
{
	long long total = 0, active, size;
	char line[512], name[64];
	FILE *f = fopen("/proc/slabinfo", "r");

	if (!f)
		die("/proc/slabinfo");
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %lld %*d %lld", name, &active, &size) != 3)
			continue;
		if (!strcmp(name, "radix_tree_node") || !strcmp(name, "maple_node"))
			total += active * size;
	}
	fclose(f);
	return total;
}

/* Whole-file conversions of an unallocated guest_memfd of @gib GiB. */
static void scale(unsigned long gib)
{
	long long before, to_private, to_shared, bytes;
	int fd = gmem_create(gib * SZ_1G);

	if (fd < 0)
		die("KVM_CREATE_GUEST_MEMFD");
	before = state_bytes();
	to_private = gmem_convert_timed(fd, 0, gib * SZ_1G, true, 0, 0);
	bytes = state_bytes() - before;
	to_shared = gmem_convert_timed(fd, 0, gib * SZ_1G, false, 0, 0);
	printf("bench: gmem_to_private_%luG_ns %lld\n", gib, to_private);
	printf("bench: gmem_to_shared_%luG_ns %lld\n", gib, to_shared);
	printf("bench: gmem_state_%luG_bytes_per_G %lld\n", gib,
	       bytes > 0 ? bytes / (long long)gib : 0);
	close(fd);
	close(gmem_vm_fd);
}

/* Every other page of 64 MiB private: the most ranges 64 MiB can have. */
static void alternating(void)
{
	size_t page = getpagesize(), offset;
	long long before, start, bytes;
	int fd = gmem_create(SZ_64M);

	if (fd < 0)
		die("KVM_CREATE_GUEST_MEMFD");
	before = state_bytes();
	start = now_ns();
	for (offset = 0; offset < SZ_64M; offset += 2 * page)
		gmem_convert_timed(fd, offset, page, true, 0, 0);
	printf("bench: gmem_alternating_64M_ns %lld\n", now_ns() - start);
	bytes = state_bytes() - before;
	printf("bench: gmem_state_alternating_64M_bytes_per_G %lld\n",
	       bytes > 0 ? bytes * (SZ_1G / SZ_64M) : 0);
	close(fd);
	close(gmem_vm_fd);
}

/* A guest_memfd of 16 MiB, mapped and populated at @addr. */
struct pending {
	int fd, vm_fd;
	long long done;
};

static void map_at(struct pending *p, char *addr)
{
	p->fd = gmem_create(SZ_16M);
	p->vm_fd = gmem_vm_fd;
	if (p->fd < 0 || mmap(addr, SZ_16M, PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_FIXED | MAP_POPULATE, p->fd, 0) != addr)
		die("guest_memfd");
	memset(addr, 0x5a, SZ_16M);
}

static void *wait_complete(void *arg)
{
	struct pending *p = arg;

	gmem_convert_timed(p->fd, 0, SZ_16M, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER |
		   KVM_SET_MEMORY_ATTRIBUTES2_WAIT, 0);
	p->done = now_ns();
	return NULL;
}

/*
 * @n guest_memfds side by side in one mapping, all pending under one
 * gup_test FOLL_LONGTERM pin (gup_test has one pin session at a time),
 * unpinned at once: ns until the last of them completed.
 */
static long long unpin_together(int n)
{
	struct pin_longterm_test args = {
		.size = n * SZ_16M, .flags = PIN_LONGTERM_TEST_FLAG_USE_WRITE,
	};
	struct timespec settle = { 0, 20 * 1000 * 1000 };
	struct pending p[2];
	pthread_t waiter[2];
	long long start, last = 0;
	char *area;
	int i, gup;

	area = mmap(NULL, n * SZ_16M, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gup = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (area == MAP_FAILED || gup < 0)
		die("mmap or gup_test");
	for (i = 0; i < n; i++)
		map_at(&p[i], area + i * SZ_16M);
	args.addr = (uintptr_t)area;
	if (ioctl(gup, PIN_LONGTERM_TEST_START, &args))
		die("PIN_LONGTERM_TEST_START");
	for (i = 0; i < n; i++) {
		gmem_convert_timed(p[i].fd, 0, SZ_16M, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER,
			   SZ_16M / getpagesize());
		pthread_create(&waiter[i], NULL, wait_complete, &p[i]);
	}
	nanosleep(&settle, NULL);	/* let the waiters fall asleep */
	start = now_ns();
	if (ioctl(gup, PIN_LONGTERM_TEST_STOP))
		die("PIN_LONGTERM_TEST_STOP");
	for (i = 0; i < n; i++) {
		pthread_join(waiter[i], NULL);
		if (p[i].done - start > last)
			last = p[i].done - start;
		close(p[i].fd);
		close(p[i].vm_fd);
	}
	munmap(area, n * SZ_16M);
	close(gup);
	return last;
}

int main(int argc, char **argv)
{
	static const unsigned long sizes[] = { 1, 16, 64 };
	unsigned long max_gib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	long long one, two;
	unsigned int i;
	int fd;

	fd = gmem_create(getpagesize());
	if (fd < 0) {
		printf("convert_scale: no host-mappable guest_memfd here: skipped\n");
		return 4;
	}
	close(fd);
	close(gmem_vm_fd);

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && sizes[i] <= max_gib; i++)
		scale(sizes[i]);
	alternating();

	one = unpin_together(1);
	two = unpin_together(2);
	printf("bench: gmem_unpin_to_complete_16M_one_ns %lld\n", one);
	printf("bench: gmem_unpin_to_complete_16M_two_ns %lld\n", two);
	printf("bench: gmem_two_vs_one_permille %lld\n", two * 1000 / one);
	return 0;
}
