// SPDX-License-Identifier: GPL-2.0
/*
 * gmem_hugetlb_demo: the series' hugetlb story, told by a small VMM.
 *
 * A KVM_X86_SW_PROTECTED_VM's private memory is one 1 GiB hugetlb page of
 * a guest_memfd, which KVM maps at 1 GiB. The guest shares one 4 KiB
 * buffer with a device (QEMU's edu, through VFIO type1 and the IOMMU): the
 * page is split only as far as that needs (1 GiB into 2 MiB pieces, one of
 * them into 4 KiB ones), and the rest stays mapped at 2 MiB. Taking the
 * buffer back is pending while the device pins it; VFIO_IOMMU_UNMAP_DMA,
 * the last put, completes the conversion and puts the 1 GiB page back
 * together, which KVM maps at 1 GiB again. When the VM goes, the pool has
 * its page back.
 *
 * Each step prints timestamped lines (ms since the start) and checks what
 * it claims; the first check that fails ends the program with status 1.
 * Needs the demo boot: nested KVM, intel-iommu, edu, a free 1 GiB page.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include <linux/kvm.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

#include "harness_util.h"
#include "guest_util.h"
#include "edu.h"

#define MEM_GPA		(4ul << 30)	/* 1 GiB aligned, above the VM's own memory */
#define MEM_SLOT	10
#define BUF_OFF		(SZ_2M + PAGE_SIZE)	/* the shared buffer, in the 2nd 2 MiB */
#define FAR_OFF		(512ul << 20)		/* a private page 512 MiB in */
#define IOVA		0x1000000ul
#define UNMAP_DELAY_MS	200

#define ATTR_PRIVATE	KVM_MEMORY_ATTRIBUTE_PRIVATE
#define DEFER		KVM_SET_MEMORY_ATTRIBUTES2_DEFER
#define WAIT		KVM_SET_MEMORY_ATTRIBUTES2_WAIT

static const char dev_msg[] = "written by the edu device, by DMA";

/* ---------------------------------------------------------------- guest */

/* Each run, the guest writes its marks and reads the buffer. */
static char guest_buf[64];

static void guest_code(void)
{
	for (;;) {
		WRITE_ONCE(*(uint64_t *)MEM_GPA, 0x5ec2e7);
		WRITE_ONCE(*(uint64_t *)(MEM_GPA + FAR_OFF), 0x5ec2e7);
		memcpy(guest_buf, (void *)(MEM_GPA + BUF_OFF), sizeof(guest_buf));
		GUEST_SYNC(0);
	}
}

/* ---------------------------------------------------------------- output */

static struct timespec start;

static long us_between(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1000000 + (b->tv_nsec - a->tv_nsec) / 1000;
}

static void __printf(1, 2) say(const char *fmt, ...)
{
	struct timespec now;
	va_list ap;

	clock_gettime(CLOCK_MONOTONIC, &now);
	printf("[%6ld ms] ", us_between(&start, &now) / 1000);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

#define check(cond, fmt, ...)						\
do {									\
	if (!(cond)) {							\
		say("FAILED (line %d): " fmt, __LINE__, ##__VA_ARGS__);	\
		exit(1);						\
	}								\
} while (0)

/* ---------------------------------------------------------------- the VMM */

struct demo {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem;
	char *reserved, *mem;
	struct edu edu;
	long free0, resv0;
};

static long pool(const char *name)
{
	char path[96];

	snprintf(path, sizeof(path),
		 "/sys/kernel/mm/hugepages/hugepages-1048576kB/%s", name);
	return file_long(path);
}

static long counter(const char *name)
{
	char path[96];

	snprintf(path, sizeof(path), "/sys/kernel/debug/kvm/gmem_%s", name);
	return file_long(path);
}

static int convert(struct demo *d, uint64_t offset, uint64_t size,
		   uint64_t attributes, uint64_t flags)
{
	struct kvm_memory_attributes2 attrs = {
		.offset = offset,
		.size = size,
		.attributes = attributes,
		.flags = flags,
	};

	return ioctl(d->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &attrs);
}

/* One run of the guest; returns what it read from the buffer. */
static const char *run_guest(struct demo *d)
{
	struct ucall uc;

	check(!_vcpu_run(d->vcpu), "KVM_RUN: %s (exit %s)", strerror(errno),
	      exit_reason_str(d->vcpu->run->exit_reason));
	check(get_ucall(d->vcpu, &uc) == UCALL_SYNC, "the guest did not sync");
	sync_global_from_guest(d->vm, guest_buf);
	guest_buf[sizeof(guest_buf) - 1] = 0;
	return guest_buf;
}

static void say_levels(struct demo *d, const char *when)
{
	say("   KVM maps the guest_memfd %s: pages_1g %lu, pages_2m %lu.", when,
	    vm_get_stat(d->vm, "pages_1g"), vm_get_stat(d->vm, "pages_2m"));
}

/* 1. A guest whose memory is one 1 GiB hugetlb page. */
static void step_create(struct demo *d)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};

	d->free0 = pool("free_hugepages");
	d->resv0 = pool("resv_hugepages");
	check(d->free0 - d->resv0 >= 1, "the boot has no free 1 GiB page");
	d->vm = vm_create_shape_with_one_vcpu(shape, &d->vcpu, guest_code);
	check(kvm_check_cap(KVM_CAP_GUEST_MEMFD_HUGETLB_SIZES) & BIT_ULL(30),
	      "KVM offers no 1 GiB hugetlb guest_memfd");
	d->gmem = gmem_bind_1g(d->vm, MEM_SLOT, MEM_GPA, &d->reserved, &d->mem);
	say("1. guest_memfd of one 1 GiB hugetlb page (GUEST_MEMFD_FLAG_HUGETLB, "
	    "huge_page_size_log2 30, GUEST_MEMFD_FLAG_MMAP), all private: 1 GiB pool "
	    "free %ld, reserved %ld -> %ld.", d->free0, d->resv0, pool("resv_hugepages"));

	say("   The host mapped it MAP_SHARED at a 1 GiB-aligned address; memslot %d "
	    "binds it at guest physical 0x%lx.", MEM_SLOT, MEM_GPA);
	virt_pg_map(d->vm, MEM_GPA, MEM_GPA);
	virt_pg_map(d->vm, MEM_GPA + BUF_OFF, MEM_GPA + BUF_OFF);
	virt_pg_map(d->vm, MEM_GPA + FAR_OFF, MEM_GPA + FAR_OFF);

	run_guest(d);
	say("   The guest wrote into its private memory at 0 and at 512 MiB.");
	say_levels(d, "at its full size");
	check(vm_get_stat(d->vm, "pages_1g") == 1, "not mapped at 1 GiB");
}

/* 2. One 4 KiB buffer shared: the page split only as far as needed. */
static void step_share(struct demo *d)
{
	long to_2m = counter("split_2m"), to_4k = counter("split_4k");

	check(!convert(d, BUF_OFF, PAGE_SIZE, 0, 0), "to shared: %s", strerror(errno));
	say("2. The VMM converted the 4 KiB buffer at 2 MiB + 4 KiB to shared: the page "
	    "split into 2 MiB pieces (%+ld) and one of them into 4 KiB pieces (%+ld).",
	    counter("split_2m") - to_2m, counter("split_4k") - to_4k);
	check(counter("split_2m") == to_2m + 1 && counter("split_4k") == to_4k + 1,
	      "not split 1 GiB -> 2 MiB -> 4 KiB once each");
	run_guest(d);
	say_levels(d, "after the guest ran again");
	check(vm_get_stat(d->vm, "pages_1g") == 0 && vm_get_stat(d->vm, "pages_2m") >= 1,
	      "the rest of the page is not mapped at 2 MiB");
}

/* 3. The device pins the buffer and writes into it. */
static void step_dma(struct demo *d)
{
	int r;

	r = edu_open(&d->edu);
	check(!r, "the device: %s", d->edu.err);
	r = edu_dma_map(&d->edu, IOVA, d->mem + BUF_OFF, PAGE_SIZE);
	check(!r, "VFIO_IOMMU_MAP_DMA: %s", strerror(-r));
	memcpy(d->mem + BUF_OFF + PAGE_SIZE / 2, dev_msg, sizeof(dev_msg));
	r = edu_dma(&d->edu, IOVA + PAGE_SIZE / 2, EDU_BUF, EDU_XFER / 2, 0);
	check(!r, "DMA from the buffer: %s", strerror(-r));
	r = edu_dma(&d->edu, EDU_BUF, IOVA, EDU_XFER / 2, 1);
	check(!r, "DMA into the buffer: %s", strerror(-r));
	say("3. edu %s pinned the buffer (VFIO_IOMMU_MAP_DMA at IOVA 0x%lx) and DMAed "
	    "\"%s\" into it.", d->edu.bdf, IOVA, d->mem + BUF_OFF);
	check(!strcmp(run_guest(d), dev_msg), "the guest read \"%s\"", guest_buf);
	say("   The guest read the shared buffer: \"%s\".", guest_buf);
}

struct unmap_job {
	struct demo *d;
	struct timespec begin;
	int ret;
};

static void *unmap_later(void *arg)
{
	struct unmap_job *job = arg;

	usleep(UNMAP_DELAY_MS * 1000);
	clock_gettime(CLOCK_MONOTONIC, &job->begin);
	job->ret = edu_dma_unmap(&job->d->edu, IOVA, PAGE_SIZE);
	return NULL;
}

/* 4. Taking the buffer back: pending, then whole on the last unpin. */
static void step_take_back(struct demo *d)
{
	long merged = counter("merge_in_place");
	struct unmap_job job = { .d = d };
	struct timespec back;
	pthread_t thread;
	int r;

	r = convert(d, BUF_OFF, PAGE_SIZE, ATTR_PRIVATE, DEFER);
	check(r == 1, "DEFER returned %d (%s), not 1 pending page", r, strerror(errno));
	check(counter("merge_in_place") == merged, "merged while pinned");
	say("4. The VMM converted the buffer back to private with DEFER: 1 page pending "
	    "while the device pins it; the 1 GiB page stays split.");

	say("   The VMM sleeps in KVM_SET_MEMORY_ATTRIBUTES2(private, WAIT); another "
	    "thread calls VFIO_IOMMU_UNMAP_DMA in %d ms.", UNMAP_DELAY_MS);
	check(!pthread_create(&thread, NULL, unmap_later, &job), "pthread_create");
	r = convert(d, BUF_OFF, PAGE_SIZE, ATTR_PRIVATE, WAIT);
	clock_gettime(CLOCK_MONOTONIC, &back);
	pthread_join(thread, NULL);
	check(!job.ret && r == 0, "unmap %d, WAIT %d", job.ret, r);
	check(counter("merge_in_place") == merged + 1, "the page was not put back together");
	say("   The unpin was the last put: the conversion completed and the 1 GiB page "
	    "was put back together (kvm/gmem_merge_in_place %+ld), %ld µs after the "
	    "unmap began.", counter("merge_in_place") - merged, us_between(&job.begin, &back));

	check(!strcmp(run_guest(d), dev_msg), "the guest read \"%s\"", guest_buf);
	say("   The guest's private buffer still holds \"%s\".", guest_buf);
	say_levels(d, "after the guest ran again");
	check(vm_get_stat(d->vm, "pages_1g") == 1, "not mapped at 1 GiB again");
}

/* 5. The pool gets its page back. */
static void step_accounting(struct demo *d)
{
	edu_close(&d->edu);
	munmap(d->reserved, 2 * SZ_1G);
	close(d->gmem);
	kvm_vm_free(d->vm);
	say("5. VFIO, the guest_memfd and the VM closed: 1 GiB pool free %ld, reserved "
	    "%ld (before the demo: %ld, %ld).", pool("free_hugepages"),
	    pool("resv_hugepages"), d->free0, d->resv0);
	check(pool("free_hugepages") == d->free0 && pool("resv_hugepages") == d->resv0,
	      "the pool did not get its page back");
}

int main(int argc, char *argv[])
{
	struct demo d = { .gmem = -1 };

	clock_gettime(CLOCK_MONOTONIC, &start);
	setvbuf(stdout, NULL, _IOLBF, 0);
	check(counter("merge_in_place") >= 0, "no kvm/gmem_* counters in debugfs");
	say("gmem_hugetlb_demo: a guest in a 1 GiB hugetlb page shares 4 KiB with a "
	    "device, then takes it back.");
	step_create(&d);
	step_share(&d);
	step_dma(&d);
	step_take_back(&d);
	step_accounting(&d);
	say("The end: split only as far as the device needed, whole again on the "
	    "device's last unpin, back in the pool when the VM went.");
	return 0;
}
