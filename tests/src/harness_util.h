/* SPDX-License-Identifier: GPL-2.0 */
/* Small helpers shared by the harness's own pin tests. */
#ifndef HARNESS_UTIL_H
#define HARNESS_UTIL_H

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define SZ_2M (2UL << 20)

/* A /proc/meminfo field in kB (or pages, for HugePages_*); -1 if absent. */
static inline long meminfo(const char *field)
{
	size_t len = strlen(field);
	char line[256];
	long val = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, len) && line[len] == ':') {
			sscanf(line + len + 1, "%ld", &val);
			break;
		}
	}
	fclose(f);
	return val;
}

/* A /proc/vmstat counter; -1 if absent. */
static inline long vmstat(const char *field)
{
	size_t len = strlen(field);
	char line[256];
	long val = -1;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, len) && line[len] == ' ') {
			sscanf(line + len + 1, "%ld", &val);
			break;
		}
	}
	fclose(f);
	return val;
}

/* Pages pinned with FOLL_PIN system-wide, exactly (one count a page). */
static inline long pins_held(void)
{
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
 * How the pinned memory is seen to return: hugetlb pages to the pool
 * (HugePages_Free, exact), normal pages to the buddy allocator (MemFree,
 * in kB). MemFree does not count pages parked on per-cpu free lists, so
 * for normal pages allow half the size as slack; pins_held() is the
 * exact check that the pages were let go.
 */
static inline long pool_free(const struct mem_kind *kind)
{
	if (kind->mmap_flags & MAP_HUGETLB)
		return meminfo("HugePages_Free") * (long)(SZ_2M >> 10);
	return meminfo("MemFree");
}

static inline long pool_slack_kb(const struct mem_kind *kind)
{
	return (kind->mmap_flags & MAP_HUGETLB) ? 0 : (long)(kind->size >> 10) / 2;
}

#endif
