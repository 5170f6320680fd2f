// SPDX-License-Identifier: GPL-2.0
/*
 * A guest sweeping its private memory, one 1 GiB hugetlb guest_memfd page,
 * while the page is whole, split (one 4 KiB page shared: 2 MiB pieces,
 * one of them in 4 KiB pieces) and merged again, for `make bench`. Prints
 *   bench: gmem_guest_sweep_1G_<state>_<first|again>_ns <ns>
 * the guest time (under -icount, instructions) of a read of every 4 KiB
 * page of the 1 GiB: "first" right after the split or the merge, which
 * includes KVM's faults (511 at 2 MiB and 512 at 4 KiB while split, one
 * at 1 GiB once merged), "again" with everything mapped; "whole" is the
 * page before the split. Medians of the rounds. TCG does not model TLB
 * misses, so the "again" sweeps cost alike; the "first" ones show what
 * mapping the page at its size saves. Exits 4 (skip) without hugetlb
 * guest_memfd (the base).
 *
 *   hugetlb_guest_bench [rounds]
 */
#include <stdlib.h>
#include <time.h>
#include <sys/mman.h>

#include <linux/kvm.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

#include "bench_util.h"
#include "guest_util.h"

#define MEM_GPA		(4ul << 30)
#define MEM_SLOT	10
#define SHARED_OFF	(SZ_2M + PAGE_SIZE)
#define MAX_ROUNDS	16

static void guest_code(void)
{
	uint64_t off, sum = 0;

	for (;;) {
		for (off = 0; off < SZ_1G; off += PAGE_SIZE)
			sum += READ_ONCE(*(uint64_t *)(MEM_GPA + off));
		GUEST_SYNC(sum);
	}
}

/* One sweep, timed. */
static long long sweep(struct kvm_vcpu *vcpu)
{
	long long start = now_ns();
	struct ucall uc;

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, &uc), UCALL_SYNC);
	return now_ns() - start;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static void report(const char *state, const char *when, long long *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_ll);
	printf("bench: gmem_guest_sweep_1G_%s_%s_ns %lld\n", state, when, v[n / 2]);
}

int main(int argc, char **argv)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};
	long long v[5][MAX_ROUNDS];
	int rounds = argc > 1 ? atoi(argv[1]) : 3;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char *reserved, *mem;
	int fd, r;

	if (rounds < 1 || rounds > MAX_ROUNDS)
		rounds = 3;
	if (!(kvm_check_cap(KVM_CAP_GUEST_MEMFD_HUGETLB_SIZES) & BIT_ULL(30))) {
		printf("hugetlb_guest_bench: no 1 GiB hugetlb guest_memfd here: skipped\n");
		return 4;
	}

	vm = vm_create_shape_with_one_vcpu(shape, &vcpu, guest_code);
	fd = gmem_bind_1g(vm, MEM_SLOT, MEM_GPA, &reserved, &mem);
	virt_map_level(vm, MEM_GPA, MEM_GPA, SZ_1G, PG_LEVEL_1G);
	sweep(vcpu);	/* allocate and zero the page, map it */

	for (r = 0; r < rounds; r++) {
		v[0][r] = sweep(vcpu);
		gmem_convert_timed(fd, SHARED_OFF, PAGE_SIZE, false, 0, 0);
		v[1][r] = sweep(vcpu);
		v[2][r] = sweep(vcpu);
		gmem_convert_timed(fd, SHARED_OFF, PAGE_SIZE, true, 0, 0);
		v[3][r] = sweep(vcpu);
		v[4][r] = sweep(vcpu);
	}
	report("whole", "again", v[0], rounds);
	report("split", "first", v[1], rounds);
	report("split", "again", v[2], rounds);
	report("merged", "first", v[3], rounds);
	report("merged", "again", v[4], rounds);

	munmap(reserved, 2 * SZ_1G);
	close(fd);
	kvm_vm_free(vm);
	return 0;
}
