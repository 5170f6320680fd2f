// SPDX-License-Identifier: GPL-2.0
/*
 * Put-path micro-benchmarks for `make bench`: time, in the guest, faulting
 * in and unmapping memory, so that every page goes through the last-put
 * paths (folios_put_refs() from the mmu_gather for 4 KiB pages,
 * free_huge_folio() through __folio_put() for hugetlb). Prints one line
 *   bench: <name> <nanoseconds per round>
 * per case. Under QEMU's -icount shift=0,sleep=off the guest clock counts
 * instructions, so the numbers repeat across boots.
 *
 *   put_bench [rounds]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "harness_util.h"

#define SZ_64M	(64UL << 20)

/* Fault in every page of a fresh mapping, then unmap it; -1 on failure. */
static long long fault_and_unmap(int flags, size_t step)
{
	long long start = now_ns();
	char *p = mmap(NULL, SZ_64M, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
	size_t off;

	if (p == MAP_FAILED)
		return -1;
	if (!(flags & MAP_HUGETLB))
		madvise(p, SZ_64M, MADV_NOHUGEPAGE);
	for (off = 0; off < SZ_64M; off += step)
		p[off] = 1;
	munmap(p, SZ_64M);
	return now_ns() - start;
}

struct bench {
	const char *name;
	int flags;
	size_t step;
};

static const struct bench benches[] = {
	{ "anon_4k_fault_munmap_64M", 0, 4096 },
	{ "hugetlb_2m_fault_munmap_64M", MAP_HUGETLB, SZ_2M },
};

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 20;
	size_t i;
	int r;

	for (i = 0; i < sizeof(benches) / sizeof(benches[0]); i++) {
		const struct bench *b = &benches[i];
		long long total = 0;

		if (fault_and_unmap(b->flags, b->step) < 0) {	/* warm-up */
			printf("bench: %s failed (no hugepages reserved?)\n", b->name);
			return 1;
		}
		for (r = 0; r < rounds; r++)
			total += fault_and_unmap(b->flags, b->step);
		printf("bench: %s %lld\n", b->name, total / rounds);
	}
	return 0;
}
