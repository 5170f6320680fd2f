/* SPDX-License-Identifier: GPL-2.0 */
/* For programs that run a guest (tests/demo, tests/guest), on the KVM selftests library. */
#ifndef GUEST_UTIL_H
#define GUEST_UTIL_H

#include <sys/mman.h>

#include "kvm_util.h"

#define SZ_1G	(1ul << 30)

/*
 * A guest_memfd of one private 1 GiB hugetlb page that the host maps,
 * bound in @vm's memslot @slot at @gpa (1 GiB aligned), its userspace_addr
 * the host's mapping, 1 GiB aligned, in *@mem (in a reservation of 2 GiB
 * at *@reserved, for munmap()). Returns the file.
 */
static inline int gmem_bind_1g(struct kvm_vm *vm, int slot, uint64_t gpa,
			       char **reserved, char **mem)
{
	struct kvm_create_guest_memfd args = {
		.size = SZ_1G,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_HUGETLB,
		.huge_page_size_log2 = 30,
	};
	int fd = __vm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);

	TEST_ASSERT(fd >= 0, "a 1 GiB hugetlb guest_memfd: errno %d", errno);
	*reserved = mmap(NULL, 2 * SZ_1G, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	TEST_ASSERT(*reserved != MAP_FAILED, "mmap: errno %d", errno);
	*mem = align_ptr_up(*reserved, SZ_1G);
	TEST_ASSERT(mmap(*mem, SZ_1G, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fd, 0) == *mem,
		    "mmap(guest_memfd): errno %d", errno);
	vm_set_user_memory_region2(vm, slot, KVM_MEM_GUEST_MEMFD, gpa, SZ_1G,
				   *mem, fd, 0);
	return fd;
}

#endif
