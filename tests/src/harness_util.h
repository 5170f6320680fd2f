/* SPDX-License-Identifier: GPL-2.0 */
/* Small helpers shared by the harness's own pin tests. */
#ifndef HARNESS_UTIL_H
#define HARNESS_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/kvm.h>

#define SZ_2M (2UL << 20)

/* CLOCK_MONOTONIC in nanoseconds, for the benchmarks. */
static inline long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The benchmarks stop at the first failure, saying what failed. */
static inline void die(const char *what)
{
	perror(what);
	exit(1);
}

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

/* The number a file holds (debugfs counters and the like); -1 if none. */
static inline long file_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long val = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &val) != 1)
		val = -1;
	fclose(f);
	return val;
}

static inline long meminfo(const char *field)
{
	return proc_field("/proc/meminfo", field, ':');
}

/* kB on the per-CPU free lists: the "count:" lines of /proc/zoneinfo. */
static inline long pcp_free_kb(void)
{
	FILE *f = fopen("/proc/zoneinfo", "r");
	long count, pages = 0;
	char line[256];

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, " count: %ld", &count) == 1)
			pages += count;
	fclose(f);
	return pages * (getpagesize() >> 10);
}

/* Shrink every slab cache: KASAN's quarantine lets go of its objects too. */
static inline void shrink_slabs(void)
{
	DIR *dir = opendir("/sys/kernel/slab");
	struct dirent *d;
	char path[512];
	int fd;

	while (dir && (d = readdir(dir))) {
		snprintf(path, sizeof(path), "/sys/kernel/slab/%s/shrink", d->d_name);
		fd = open(path, O_WRONLY);
		if (fd >= 0) {
			if (write(fd, "1", 1) != 1)
				perror(path);
			close(fd);
		}
	}
	if (dir)
		closedir(dir);
}

/*
 * Free memory: MemFree plus the pages parked on the per-CPU free lists,
 * which MemFree leaves out and which swing by tens of MiB from one reading
 * to the next (userspace cannot drain them), with the page cache and
 * reclaimable slab dropped and every slab cache shrunk first.
 */
static inline long free_kb(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	sync();
	if (fd >= 0) {
		if (write(fd, "3", 1) != 1)
			perror("drop_caches");
		close(fd);
	}
	shrink_slabs();
	return meminfo("MemFree") + pcp_free_kb();
}

/*
 * The page tables the kernel's direct map took since DirectMap4k and
 * DirectMap1G read @dm4k and @dm1g kB: one per 2 MiB split into 4 KiB
 * pages, one per 1 GiB split into 2 MiB ones. They stay: guest_memfd's
 * CONFIG_KVM_GMEM_UNMAP_PRIVATE splits the direct map of its folios.
 */
static inline long direct_map_tables_kb(long dm4k, long dm1g)
{
	return (meminfo("DirectMap4k") - dm4k) / 512 +
	       (dm1g - meminfo("DirectMap1G")) / (1 << 20) * 4;
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
	bool guest_memfd;
};

/*
 * The guest_memfd that map_populated() made last and its VM, or -1. Unless
 * closed, they live as long as the process: each test runs in its own.
 */
static int gmem_fd = -1, gmem_vm_fd = -1;

/* A guest_memfd of a new software-protected VM (gmem_vm_fd), or -1. */
static inline int gmem_create_args(struct kvm_create_guest_memfd *args)
{
	int kvm = open("/dev/kvm", O_RDWR);

	if (kvm < 0)
		return -1;
	gmem_vm_fd = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	close(kvm);
	if (gmem_vm_fd < 0)
		return -1;
	return ioctl(gmem_vm_fd, KVM_CREATE_GUEST_MEMFD, args);
}

/* Host-mappable and shared. */
static inline int gmem_create(size_t size)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};

	return gmem_create_args(&args);
}

/* Host-mappable, private, in 2 MiB hugetlb pages. */
static inline int gmem_create_hugetlb_2m(size_t size)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_HUGETLB,
		.huge_page_size_log2 = 21,
	};

	return gmem_create_args(&args);
}

/* A counter of guest_memfd's hugetlb splits and merges (kvm/gmem_<name>), or -1. */
static inline long gmem_split_counter(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/kernel/debug/kvm/gmem_%s", name);
	return file_long(path);
}

/* A populated mapping of @kind, filled with 0x5a, or MAP_FAILED. */
static inline void *map_populated(const struct mem_kind *kind)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | kind->mmap_flags;
	char *p;

	if (kind->guest_memfd) {
		gmem_fd = gmem_create(kind->size);
		if (gmem_fd < 0)
			return MAP_FAILED;
		flags = MAP_SHARED | MAP_POPULATE;
	}
	p = mmap(NULL, kind->size, PROT_READ | PROT_WRITE, flags, gmem_fd, 0);
	if (p != MAP_FAILED)
		memset(p, 0x5a, kind->size);
	return p;
}

/* KVM_SET_MEMORY_ATTRIBUTES2 on gmem_fd; the error offset goes to *@error. */
static inline int gmem_convert(size_t offset, size_t size, bool private,
			       uint64_t flags, uint64_t *error)
{
	struct kvm_memory_attributes2 attrs = {
		.offset = offset,
		.size = size,
		.attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
		.flags = flags,
	};
	int r = ioctl(gmem_fd, KVM_SET_MEMORY_ATTRIBUTES2, &attrs);

	if (error)
		*error = attrs.error_offset;
	return r;
}

static sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(sigbus_jmp, 1);
}

/* Whether the host can read the byte at @p (a private page: SIGBUS). */
static inline bool host_can_read(const char *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	bool ok = false;

	sigaction(SIGBUS, &sa, &old);
	if (!sigsetjmp(sigbus_jmp, 1)) {
		(void)*(const volatile char *)p;
		ok = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return ok;
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
