// SPDX-License-Identifier: GPL-2.0
/*
 * guest_memfd conversion cost for `make bench`, on a host-mappable
 * guest_memfd of a software-protected VM (no vCPU needed). Prints
 *   bench: <name> <nanoseconds, median of the rounds>
 * for converting 64 MiB shared -> private and private -> shared with nothing
 * holding the pages; making 64 MiB pending under a FOLL_LONGTERM pin
 * (gup_test) with KVM_SET_MEMORY_ATTRIBUTES2_DEFER; and the time from the
 * start of the unpin to the return of KVM_SET_MEMORY_ATTRIBUTES2_WAIT in
 * another thread, for 64 MiB and for one page. Then the two unpinned
 * conversions again on a new guest_memfd made with kvm.gmem_unmap_private
 * on (CONFIG_KVM_GMEM_UNMAP_PRIVATE: private pages leave the direct map),
 * which the first file was made without. Exits 4 (skip) on a kernel
 * without in-place conversion, such as the base.
 *
 *   convert_bench [rounds]
 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"

#define SZ_64M	(64UL << 20)

/* One conversion of [0, @size), timed; dies unless it returns @want. */
static long long convert_timed(size_t size, bool private, uint64_t flags, int want)
{
	return gmem_convert_timed(gmem_fd, 0, size, private, flags, want);
}

static void pin(int gup, char *buf, size_t size)
{
	struct pin_longterm_test args = {
		.addr = (uintptr_t)buf, .size = size,
		.flags = PIN_LONGTERM_TEST_FLAG_USE_WRITE,
	};

	if (ioctl(gup, PIN_LONGTERM_TEST_START, &args))
		die("PIN_LONGTERM_TEST_START");
}

struct waiter {
	size_t size;
	long long done;
};

static void *wait_for_completion(void *arg)
{
	struct waiter *w = arg;

	convert_timed(w->size, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER |
		      KVM_SET_MEMORY_ATTRIBUTES2_WAIT, 0);
	w->done = now_ns();
	return NULL;
}

/*
 * Pin [0, @size), convert it (pending), then time from the start of the
 * unpin to the return of a WAIT sleeping in another thread.
 */
static long long unpin_to_complete(int gup, char *buf, size_t size)
{
	struct waiter w = { .size = size };

	convert_timed(SZ_64M, false, 0, 0);
	pin(gup, buf, size);
	convert_timed(size, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER, size / getpagesize());
	return unpin_to_done(gup, wait_for_completion, &w, &w.done);
}

#define UNMAP_PRIVATE	"/sys/module/kvm/parameters/gmem_unmap_private"

/* kvm.gmem_unmap_private, for the guest_memfds created from now on. */
static void set_unmap_private(const char *on)
{
	FILE *f = fopen(UNMAP_PRIVATE, "w");

	if (!f || fputs(on, f) < 0 || fclose(f))
		die(UNMAP_PRIVATE " (CONFIG_KVM_GMEM_UNMAP_PRIVATE)");
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

#define MAX_ROUNDS 64

struct series {
	const char *name;
	long long v[MAX_ROUNDS];
};

static void report(struct series *s, int rounds)
{
	qsort(s->v, rounds, sizeof(s->v[0]), cmp_ll);
	printf("bench: %s %lld\n", s->name, s->v[rounds / 2]);
}

int main(int argc, char **argv)
{
	const struct mem_kind kind = { "guest_memfd", 0, SZ_64M, true };
	int rounds = argc > 1 ? atoi(argv[1]) : 9;
	struct series to_private = { "gmem_to_private_64M_ns" };
	struct series to_shared = { "gmem_to_shared_64M_ns" };
	struct series to_pending = { "gmem_to_pending_64M_ns" };
	struct series complete = { "gmem_unpin_to_complete_64M_ns" };
	struct series complete_4k = { "gmem_unpin_to_complete_4K_ns" };
	struct series to_private_unmapped = { "gmem_to_private_64M_unmapped_ns" };
	struct series to_shared_unmapped = { "gmem_to_shared_64M_unmapped_ns" };
	char *buf;
	int gup, r;

	if (rounds < 1 || rounds > MAX_ROUNDS)
		rounds = 9;
	buf = map_populated(&kind);
	if (buf == MAP_FAILED) {
		printf("convert_bench: no host-mappable guest_memfd here: skipped\n");
		return 4;
	}
	set_unmap_private("0");
	munmap(buf, SZ_64M);
	close(gmem_fd);
	buf = map_populated(&kind);
	if (buf == MAP_FAILED)
		die("guest_memfd");
	gup = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (gup < 0)
		die("/sys/kernel/debug/gup_test");

	for (r = 0; r < rounds; r++) {
		memset(buf, r, SZ_64M);
		to_private.v[r] = convert_timed(SZ_64M, true, 0, 0);
		to_shared.v[r] = convert_timed(SZ_64M, false, 0, 0);

		pin(gup, buf, SZ_64M);
		to_pending.v[r] = convert_timed(SZ_64M, true, KVM_SET_MEMORY_ATTRIBUTES2_DEFER,
						SZ_64M / getpagesize());
		convert_timed(SZ_64M, false, 0, 0);	/* cancel: pinned pages stay */
		if (ioctl(gup, PIN_LONGTERM_TEST_STOP))
			die("PIN_LONGTERM_TEST_STOP");

		complete.v[r] = unpin_to_complete(gup, buf, SZ_64M);
		complete_4k.v[r] = unpin_to_complete(gup, buf, getpagesize());
		convert_timed(SZ_64M, false, 0, 0);
	}

	set_unmap_private("1");
	munmap(buf, SZ_64M);
	close(gmem_fd);
	buf = map_populated(&kind);
	if (buf == MAP_FAILED)
		die("guest_memfd");
	for (r = 0; r < rounds; r++) {
		memset(buf, r, SZ_64M);
		to_private_unmapped.v[r] = convert_timed(SZ_64M, true, 0, 0);
		to_shared_unmapped.v[r] = convert_timed(SZ_64M, false, 0, 0);
	}
	set_unmap_private("0");

	report(&to_private, rounds);
	report(&to_shared, rounds);
	report(&to_pending, rounds);
	report(&complete, rounds);
	report(&complete_4k, rounds);
	report(&to_private_unmapped, rounds);
	report(&to_shared_unmapped, rounds);
	return 0;
}
