/* SPDX-License-Identifier: GPL-2.0 */
/* Small helpers shared by the harness's own pin tests. */
#ifndef HARNESS_UTIL_H
#define HARNESS_UTIL_H

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define SZ_2M (2UL << 20)

/* The number after @field in a /proc file of "field<sep> value" lines; -1 if absent. */
static inline long proc_field(const char *path, const char *field, char sep)
{
	size_t len = strlen(field);
	char line[256];
	long val = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, len) && line[len] == sep) {
			sscanf(line + len + 1, "%ld", &val);
			break;
		}
	}
	fclose(f);
	return val;
}

static inline long meminfo(const char *field)
{
	return proc_field("/proc/meminfo", field, ':');
}

static inline long vmstat(const char *field)
{
	return proc_field("/proc/vmstat", field, ' ');
}

/*
 * Pages pinned with FOLL_PIN system-wide (one count a page). The counters
 * are per-cpu until folded: vm/stat_refresh folds them, making this exact.
 */
static inline long pins_held(void)
{
	FILE *f = fopen("/proc/sys/vm/stat_refresh", "w");

	if (f) {
		fputs("1", f);
		fclose(f);
	}
	return vmstat("nr_foll_pin_acquired") - vmstat("nr_foll_pin_released");
}

/* The kinds of memory the pin tests pin, as fixture variants use them. */
struct mem_kind {
	const char *name;
	int mmap_flags;
	size_t size;
};

/* A populated anonymous mapping of @kind, or MAP_FAILED. */
static inline void *map_populated(const struct mem_kind *kind)
{
	char *p = mmap(NULL, kind->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | kind->mmap_flags,
		       -1, 0);

	if (p != MAP_FAILED)
		memset(p, 0x5a, kind->size);
	return p;
}

/*
 * Free pages of the hugetlb pool. The MAP_HUGETLB variants check with it
 * that pinned pages stay out of the pool and come back, exactly; for 4 KiB
 * pages MemFree cannot tell (per-cpu free lists hide pages from it), so
 * those variants rely on pins_held() alone.
 */
static inline long hugepages_free(void)
{
	return meminfo("HugePages_Free");
}

#endif
