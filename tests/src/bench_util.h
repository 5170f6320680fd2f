/* SPDX-License-Identifier: GPL-2.0 */
/* What the guest_memfd benchmarks of `make bench` share. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <pthread.h>
#include <time.h>

#include "harness_util.h"
#include "../../../mm/gup_test.h"

/* KVM_SET_MEMORY_ATTRIBUTES2 on @fd, timed; dies unless it returns @want. */
static inline long long gmem_convert_timed(int fd, size_t offset, size_t size,
					   bool private, uint64_t flags, int want)
{
	struct kvm_memory_attributes2 attrs = {
		.offset = offset,
		.size = size,
		.attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
		.flags = flags,
	};
	long long start = now_ns();

	if (ioctl(fd, KVM_SET_MEMORY_ATTRIBUTES2, &attrs) != want)
		die("KVM_SET_MEMORY_ATTRIBUTES2");
	return now_ns() - start;
}

/*
 * Start @waiter(@arg) in a thread and let it fall asleep (in a WAIT), then
 * end gup_test's pin (@gup): the time from the start of the unpin to
 * *@done, which @waiter sets to now_ns() once woken.
 */
static inline long long unpin_to_done(int gup, void *(*waiter)(void *),
				      void *arg, const long long *done)
{
	struct timespec settle = { 0, 20 * 1000 * 1000 };
	pthread_t thread;
	long long start;

	pthread_create(&thread, NULL, waiter, arg);
	nanosleep(&settle, NULL);
	start = now_ns();
	if (ioctl(gup, PIN_LONGTERM_TEST_STOP))
		die("PIN_LONGTERM_TEST_STOP");
	pthread_join(thread, NULL);
	return *done - start;
}

#endif
