// SPDX-License-Identifier: GPL-2.0
/*
 * gmem_demo: the series' story, told by a small VMM.
 *
 * A KVM_X86_SW_PROTECTED_VM's memory is a guest_memfd that the host maps
 * and that a device (QEMU's edu, through VFIO type1 and the IOMMU) pins for
 * DMA. The guest asks for that memory to become private. Upstream, the VMM
 * gets EAGAIN for as long as the device holds its pins. With the series the
 * VMM converts with KVM_SET_MEMORY_ATTRIBUTES2_DEFER: the pinned pages are
 * pending (the host and the guest can no longer use them, the device still
 * can) and each completes its conversion, with its content, when its last
 * reference drops, here in VFIO_IOMMU_UNMAP_DMA.
 *
 * Each step prints timestamped lines (ms since the start) and checks what
 * it claims; the first check that fails ends the program with status 1 and
 * says what was expected. Needs the demo boot: nested KVM, intel-iommu with
 * intel_iommu=on, and QEMU's edu device.
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
#include <linux/kvm_para.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

#include "harness_util.h"
#include "edu.h"

#define NR_PAGES	16
#define MEM_SIZE	((unsigned long)NR_PAGES << PAGE_SHIFT)
#define MEM_GPA		0xc0000000ul	/* where the guest sees the guest_memfd */
#define MEM_SLOT	10
#define IOVA		0x1000000ul	/* where the device sees it; < EDU_IOVA_LIMIT */
#define UNMAP_DELAY_MS	200

/* The pages the story uses, as offsets into the guest_memfd. */
#define PAGE_GUEST	(0 * PAGE_SIZE)	/* the host's message, then the guest's */
#define PAGE_DEV_SRC	(1 * PAGE_SIZE)	/* what the device copies */
#define PAGE_DEV_DST	(2 * PAGE_SIZE)	/* where it copies it while shared */

#define ATTR_PRIVATE	KVM_MEMORY_ATTRIBUTE_PRIVATE
#define DEFER		KVM_SET_MEMORY_ATTRIBUTES2_DEFER
#define WAIT		KVM_SET_MEMORY_ATTRIBUTES2_WAIT

static const char host_msg[] = "hello from the host";
static const char dev_msg[] = "written by the edu device, by DMA";
static const char secret[] = "the guest's secret";

/* ---------------------------------------------------------------- guest */

enum { STAGE_READ_SHARED = 1, STAGE_READ_PRIVATE };

/* What the guest read from its page, for the host to look at. */
static char guest_buf[64];

static void guest_read_page(void)
{
	const char *p = (const char *)(MEM_GPA + PAGE_GUEST);
	int i;

	for (i = 0; i < sizeof(guest_buf); i++)
		guest_buf[i] = READ_ONCE(p[i]);
}

static void guest_code(void)
{
	char *page = (char *)(MEM_GPA + PAGE_GUEST);

	/* Step 2: a shared access to what the host wrote. */
	guest_read_page();
	GUEST_SYNC(STAGE_READ_SHARED);

	/*
	 * Step 4: "make this memory private"; KVM turns SEV-SNP's and TDX's
	 * requests into the same exit.
	 */
	GUEST_ASSERT_EQ(__kvm_hypercall_map_gpa_range(MEM_GPA, MEM_SIZE,
						      KVM_MAP_GPA_RANGE_ENCRYPTED |
						      KVM_MAP_GPA_RANGE_PAGE_SZ_4K), 0);

	/* Step 5 exits here while the page is pending; step 7 goes on. */
	guest_read_page();
	memcpy(page, secret, sizeof(secret));
	GUEST_SYNC(STAGE_READ_PRIVATE);

	/* After the device's blocked DMA: the secret is intact. */
	GUEST_ASSERT(!memcmp(page, secret, sizeof(secret)));
	GUEST_DONE();
}

/* ---------------------------------------------------------------- story */

static struct timespec start;

static long us_between(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1000000L + (b->tv_nsec - a->tv_nsec) / 1000;
}

static long ms_since_start(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return us_between(&start, &now) / 1000;
}

/* One line of the story, stamped with the time since the start. */
static void __printf(1, 2) say(const char *fmt, ...)
{
	va_list ap;

	printf("[%6ld ms] ", ms_since_start());
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void __noreturn __printf(2, 3) fail(int line, const char *fmt, ...)
{
	va_list ap;

	printf("[%6ld ms] FAILED (gmem_demo.c:%d): ", ms_since_start(), line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	exit(1);
}

/* Ends the demo with a message unless @cond holds. */
#define check(cond, fmt, ...)						\
do {									\
	if (!(cond))							\
		fail(__LINE__, fmt, ##__VA_ARGS__);			\
} while (0)

/* ---------------------------------------------------------------- the VMM */

struct demo {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem;		/* the guest_memfd */
	char *mem;		/* the host's MAP_SHARED mapping of it */
	struct edu edu;
	long pins0;		/* FOLL_PIN pages held before the demo */
	long free0;		/* free_kb() before the demo */
};

/* KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd; returns the ioctl's result. */
static int convert(struct demo *d, uint64_t offset, uint64_t size,
		   uint64_t attributes, uint64_t flags, uint64_t *error_offset)
{
	struct kvm_memory_attributes2 attrs = {
		.offset = offset,
		.size = size,
		.attributes = attributes,
		.flags = flags,
	};
	int r = ioctl(d->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &attrs);

	if (error_offset)
		*error_offset = attrs.error_offset;
	return r;
}

static long pins_now(struct demo *d)
{
	return pins_held() - d->pins0;
}

/* Runs the vCPU up to its next ucall, which must be GUEST_SYNC(@stage). */
static void run_to_sync(struct demo *d, uint64_t stage)
{
	struct kvm_run *run = d->vcpu->run;
	struct ucall uc;
	int r = _vcpu_run(d->vcpu);

	check(!r, "KVM_RUN: %s (exit reason %s)", strerror(errno),
	      exit_reason_str(run->exit_reason));
	switch (get_ucall(d->vcpu, &uc)) {
	case UCALL_SYNC:
		check(uc.args[1] == stage, "the guest reached stage %lu, not %lu",
		      uc.args[1], stage);
		return;
	case UCALL_ABORT:
		fail(__LINE__, "the guest failed at %s:%lu: %s",
		     (const char *)uc.args[GUEST_FILE], uc.args[GUEST_LINE], uc.buffer);
	case UCALL_DONE:
		fail(__LINE__, "the guest finished early");
	default:
		fail(__LINE__, "unexpected exit %s", exit_reason_str(run->exit_reason));
	}
}

static void run_to_done(struct demo *d)
{
	struct ucall uc;

	check(!_vcpu_run(d->vcpu), "KVM_RUN: %s", strerror(errno));
	switch (get_ucall(d->vcpu, &uc)) {
	case UCALL_DONE:
		return;
	case UCALL_ABORT:
		fail(__LINE__, "the guest failed at %s:%lu: %s",
		     (const char *)uc.args[GUEST_FILE], uc.args[GUEST_LINE], uc.buffer);
	default:
		fail(__LINE__, "unexpected exit %s",
		     exit_reason_str(d->vcpu->run->exit_reason));
	}
}

/* What the guest last read from its page. */
static const char *guest_saw(struct demo *d)
{
	sync_global_from_guest(d->vm, guest_buf);
	guest_buf[sizeof(guest_buf) - 1] = 0;
	return guest_buf;
}

/* The features the story needs: a kernel with the series, nested KVM. */
static void check_kvm(void)
{
	check(!access("/dev/kvm", R_OK | W_OK), "no /dev/kvm: this boot has no nested KVM");
	check(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM),
	      "KVM does not offer KVM_X86_SW_PROTECTED_VM (CONFIG_KVM_SW_PROTECTED_VM)");
	check(kvm_check_cap(KVM_CAP_EXIT_HYPERCALL) & BIT(KVM_HC_MAP_GPA_RANGE),
	      "KVM cannot exit to userspace on KVM_HC_MAP_GPA_RANGE");
}

/* 1. The VM, its guest_memfd, the host's mapping and the memslot. */
static void step_create_vm(struct demo *d)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};
	const uint64_t flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
	int r;

	check_kvm();
	d->vm = vm_create_shape_with_one_vcpu(shape, &d->vcpu, guest_code);
	check((vm_check_cap(d->vm, KVM_CAP_GUEST_MEMFD_FLAGS) & flags) == flags,
	      "guest_memfd lacks MMAP|INIT_SHARED: is this the series' kernel?");
	check(vm_check_cap(d->vm, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) & ATTR_PRIVATE,
	      "KVM_SET_MEMORY_ATTRIBUTES2 cannot make pages private on this VM");
	r = __vm_enable_cap(d->vm, KVM_CAP_EXIT_HYPERCALL, BIT(KVM_HC_MAP_GPA_RANGE));
	check(!r, "KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL): %s", strerror(errno));
	say("1. Created a KVM_X86_SW_PROTECTED_VM with one vCPU; KVM_HC_MAP_GPA_RANGE "
	    "hypercalls exit to this VMM (KVM_CAP_EXIT_HYPERCALL).");

	d->gmem = __vm_create_guest_memfd(d->vm, MEM_SIZE, flags);
	check(d->gmem >= 0, "KVM_CREATE_GUEST_MEMFD: %s", strerror(errno));
	say("   guest_memfd of %d pages (%lu KiB), flags MMAP|INIT_SHARED: the host may "
	    "map it, and every page starts shared.", NR_PAGES, MEM_SIZE >> 10);

	d->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, d->gmem, 0);
	check(d->mem != MAP_FAILED, "mmap(guest_memfd, MAP_SHARED): %s", strerror(errno));
	r = __vm_set_user_memory_region2(d->vm, MEM_SLOT, KVM_MEM_GUEST_MEMFD, MEM_GPA,
					 MEM_SIZE, d->mem, d->gmem, 0);
	check(!r, "KVM_SET_USER_MEMORY_REGION2: %s", strerror(errno));
	virt_map(d->vm, MEM_GPA, MEM_GPA, NR_PAGES);
	say("   The host mapped it MAP_SHARED; memslot %d binds it at guest physical "
	    "0x%lx with userspace_addr = that mapping; the guest maps it 1:1.",
	    MEM_SLOT, MEM_GPA);
}

/* 2. The host and the guest share page 0. */
static void step_shared(struct demo *d)
{
	memcpy(d->mem + PAGE_GUEST, host_msg, sizeof(host_msg));
	say("2. The host wrote \"%s\" into page 0 through its mapping.", host_msg);

	run_to_sync(d, STAGE_READ_SHARED);
	check(!strcmp(guest_saw(d), host_msg), "the guest read \"%s\"", guest_buf);
	say("   The guest read page 0 (a shared access) and reported by ucall: \"%s\".",
	    guest_buf);
}

/* 3. The device pins the whole guest_memfd and DMAs through the IOMMU. */
static void step_dma(struct demo *d)
{
	char *dst = d->mem + PAGE_DEV_DST;
	int r;

	r = edu_open(&d->edu);
	check(!r, "the device: %s (the demo boot has intel-iommu and edu)", d->edu.err);
	say("3. edu device %s (1234:11e8) bound to vfio-pci, IOMMU group %d, in a "
	    "VFIO type1 container.", d->edu.bdf, d->edu.iommu_group);

	d->pins0 = pins_held();
	r = edu_dma_map(&d->edu, IOVA, d->mem, MEM_SIZE);
	check(!r, "VFIO_IOMMU_MAP_DMA: %s", strerror(-r));
	check(pins_now(d) == NR_PAGES, "%ld pages pinned, not %d", pins_now(d), NR_PAGES);
	say("   VFIO_IOMMU_MAP_DMA of the guest_memfd mapping at IOVA 0x%lx: pinned "
	    "pages %+ld (nr_foll_pin_acquired - nr_foll_pin_released).", IOVA, pins_now(d));

	memcpy(d->mem + PAGE_DEV_SRC, dev_msg, sizeof(dev_msg));
	r = edu_dma(&d->edu, IOVA + PAGE_DEV_SRC, EDU_BUF, EDU_XFER, 0);
	check(!r, "DMA from page 1: %s", strerror(-r));
	r = edu_dma(&d->edu, EDU_BUF, IOVA + PAGE_DEV_DST, EDU_XFER, 1);
	check(!r, "DMA to page 2: %s", strerror(-r));
	check(!strcmp(dst, dev_msg), "page 2 holds \"%.40s\" after the DMA", dst);
	check(!edu_dmar_fault_seen(&d->edu, IOVA), "the IOMMU reported a fault");
	say("   The device DMAed page 1 into its buffer and its buffer into page 2, "
	    "through the IOMMU: page 2 reads \"%s\".", dst);
}

/* 4. The guest asks for private memory; the device still pins all of it. */
static void step_convert(struct demo *d)
{
	struct kvm_run *run = d->vcpu->run;
	uint64_t gpa, size, offset, error_offset;
	int r;

	r = _vcpu_run(d->vcpu);
	check(!r, "KVM_RUN: %s", strerror(errno));
	check(run->exit_reason == KVM_EXIT_HYPERCALL &&
	      run->hypercall.nr == KVM_HC_MAP_GPA_RANGE,
	      "exit %s, not KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE)",
	      exit_reason_str(run->exit_reason));
	gpa = run->hypercall.args[0];
	size = run->hypercall.args[1] * PAGE_SIZE;
	check(gpa >= MEM_GPA && gpa + size <= MEM_GPA + MEM_SIZE,
	      "the guest asked for 0x%lx+0x%lx, outside its guest_memfd", gpa, size);
	check(run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED,
	      "the guest asked for shared memory, not private");
	offset = gpa - MEM_GPA;
	say("4. The guest asked for guest physical 0x%lx-0x%lx to become private "
	    "(KVM_HC_MAP_GPA_RANGE); the VMM got KVM_EXIT_HYPERCALL.", gpa, gpa + size - 1);

	r = convert(d, offset, size, ATTR_PRIVATE, 0, &error_offset);
	check(r == -1 && errno == EAGAIN, "KVM_SET_MEMORY_ATTRIBUTES2 without flags "
	      "returned %d (%s), not EAGAIN", r, strerror(errno));
	check(host_can_read(d->mem + PAGE_GUEST), "EAGAIN, yet the host lost page 0");
	say("   KVM_SET_MEMORY_ATTRIBUTES2(private), no flags: EAGAIN, error_offset 0x%lx "
	    "(a page the device pins). Upstream's behaviour: nothing converted; the VMM "
	    "must unmap the DMA first, or retry.", error_offset);

	r = convert(d, offset, size, ATTR_PRIVATE, DEFER, NULL);
	check(r == NR_PAGES, "with DEFER: returned %d (%s), not %d pending pages",
	      r, r < 0 ? strerror(errno) : "", NR_PAGES);
	say("   Again with KVM_SET_MEMORY_ATTRIBUTES2_DEFER: returns %d: all %d pages are "
	    "pending, private once the device's pins, their last references, drop.",
	    r, NR_PAGES);
	run->hypercall.ret = 0;
}

/* 5. A pending page: not the guest's yet, not the host's, still the device's. */
static void step_pending(struct demo *d)
{
	struct kvm_run *run = d->vcpu->run;
	const uint64_t want = KVM_MEMORY_EXIT_FLAG_PRIVATE | KVM_MEMORY_EXIT_FLAG_PENDING;
	int r;

	r = _vcpu_run(d->vcpu);
	check(r == -1 && errno == EFAULT, "KVM_RUN returned %d (%s), not EFAULT",
	      r, strerror(errno));
	check(run->exit_reason == KVM_EXIT_MEMORY_FAULT, "exit %s, not MEMORY_FAULT",
	      exit_reason_str(run->exit_reason));
	check(run->memory_fault.flags == want && run->memory_fault.gpa == MEM_GPA,
	      "memory fault at 0x%llx with flags 0x%llx", run->memory_fault.gpa,
	      run->memory_fault.flags);
	say("5. The guest touched page 0: KVM_RUN failed with EFAULT, exit "
	    "KVM_EXIT_MEMORY_FAULT gpa 0x%llx size %llu flags 0x%llx (PRIVATE|PENDING): "
	    "the vCPU waits for the conversion.", run->memory_fault.gpa,
	    run->memory_fault.size, run->memory_fault.flags);

	check(!host_can_read(d->mem + PAGE_GUEST), "the host can still read page 0");
	say("   The host reading page 0 through its mapping gets SIGBUS.");

	r = edu_dma(&d->edu, EDU_BUF, IOVA + PAGE_GUEST, EDU_XFER, 1);
	check(!r, "DMA to page 0: %s", strerror(-r));
	check(!edu_dmar_fault_seen(&d->edu, IOVA), "the IOMMU faulted on a pinned page");
	check(pins_now(d) == NR_PAGES, "%ld pages pinned, not %d", pins_now(d), NR_PAGES);
	say("   The device DMAed \"%s\" into page 0 at IOVA 0x%lx: no IOMMU fault, its "
	    "%ld pins are still valid.", dev_msg, IOVA, pins_now(d));
}

struct unmap_job {
	struct demo *d;
	struct timespec begin, end;
	int ret;
};

/* The second thread: the VMM tears the device's DMA mapping down. */
static void *unmap_later(void *arg)
{
	struct unmap_job *job = arg;

	usleep(UNMAP_DELAY_MS * 1000);
	clock_gettime(CLOCK_MONOTONIC, &job->begin);
	job->ret = edu_dma_unmap(&job->d->edu, IOVA, MEM_SIZE);
	clock_gettime(CLOCK_MONOTONIC, &job->end);
	return NULL;
}

/* 6. The last put completes the conversion and wakes the waiter. */
static void step_wait(struct demo *d)
{
	struct unmap_job job = { .d = d };
	struct timespec back;
	pthread_t thread;
	int r;

	say("6. The VMM sleeps in KVM_SET_MEMORY_ATTRIBUTES2(private, DEFER|WAIT); "
	    "another thread calls VFIO_IOMMU_UNMAP_DMA in %d ms.", UNMAP_DELAY_MS);
	check(!pthread_create(&thread, NULL, unmap_later, &job), "pthread_create");
	r = convert(d, 0, MEM_SIZE, ATTR_PRIVATE, DEFER | WAIT, NULL);
	clock_gettime(CLOCK_MONOTONIC, &back);
	pthread_join(thread, NULL);

	check(!job.ret, "VFIO_IOMMU_UNMAP_DMA: %s", strerror(-job.ret));
	check(r == 0, "DEFER|WAIT returned %d (%s), not 0 pending pages",
	      r, r < 0 ? strerror(errno) : "");
	check(us_between(&job.begin, &back) >= 0,
	      "the wait returned before the unmap began: it did not wait");
	say("   VFIO_IOMMU_UNMAP_DMA dropped the pins (%ld µs); the wait returned %ld µs "
	    "after the unmap began, 0 pages pending: the last put completed the conversion.",
	    us_between(&job.begin, &job.end), us_between(&job.begin, &back));
}

/* 7. The guest owns its page, with its content; the device is locked out. */
static void step_private(struct demo *d)
{
	int r;

	run_to_sync(d, STAGE_READ_PRIVATE);
	check(!strcmp(guest_saw(d), dev_msg), "the guest read \"%s\"", guest_buf);
	say("7. The guest ran again and read its now private page 0: \"%s\": what the "
	    "device wrote while the page was pending is kept.", guest_buf);

	check(!host_can_read(d->mem + PAGE_GUEST), "the host can read the private page");
	say("   The guest wrote \"%s\" into page 0; the host reading it gets SIGBUS.",
	    secret);

	r = edu_dma(&d->edu, EDU_BUF, IOVA + PAGE_GUEST, EDU_XFER, 1);
	check(!r, "DMA to the old IOVA: %s", strerror(-r));
	check(edu_dmar_fault_seen(&d->edu, IOVA), "no DMAR fault at 0x%lx", IOVA);
	run_to_done(d);
	say("   The device's DMA to the old IOVA: DMAR fault (kernel log: \"fault addr "
	    "0x%lx\"); the guest checked that its secret is intact.", IOVA);
}

/* 8. Everything given back. */
static void step_accounting(struct demo *d)
{
	long free;

	check(pins_now(d) == 0, "%+ld pins against the start", pins_now(d));
	say("8. Pinned pages against the start: %+ld.", pins_now(d));

	edu_close(&d->edu);
	munmap(d->mem, MEM_SIZE);
	close(d->gmem);
	kvm_vm_free(d->vm);
	free = free_kb();
	say("   VFIO, the guest_memfd and the VM closed. Free memory (MemFree + per-CPU "
	    "lists) %ld kB before, %ld kB after (%+ld kB: vfio-pci and the IOMMU keep "
	    "some for the device).", d->free0, free, free - d->free0);
}

int main(int argc, char *argv[])
{
	struct demo d = { .gmem = -1 };

	clock_gettime(CLOCK_MONOTONIC, &start);
	setvbuf(stdout, NULL, _IOLBF, 0);
	d.free0 = free_kb();
	say("gmem_demo: guest_memfd memory shared with the host and a device, "
	    "converted to private while the device still pins it.");

	step_create_vm(&d);
	step_shared(&d);
	step_dma(&d);
	step_convert(&d);
	step_pending(&d);
	step_wait(&d);
	step_private(&d);
	step_accounting(&d);
	say("The end: the conversion completed on the last put of the device's pins; "
	    "no EAGAIN retry loop, no polling.");
	return 0;
}
