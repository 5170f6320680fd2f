# Build, statically, the test programs the boots run:
#   make -f tests/selftests.mk KSRC=build/linux HDR=<obj>/usr/include OUT=build/selftests
# Upstream selftests are compiled from KSRC against the patched tree's
# installed headers (HDR); nothing is written into KSRC. The mm selftests'
# own Makefile would write local_config.* into the tree, so they are
# compiled here with our own local_config.h instead.

KSRC ?= build/linux
HDR  ?= build/obj-debug/usr/include
OUT  ?= build/selftests
SELF := $(KSRC)/tools/testing/selftests

MM_TESTS := gup_longterm gup_test hmm-tests hugepage-mmap hugepage-shm map_hugetlb \
	hugepage-mremap hugepage-vmemmap hugetlb-madvise hugetlb_fault_after_madv \
	hugetlb_madv_vs_map hugetlb_dio
KVM_TESTS := guest_memfd_test guest_memfd_conversions_test guest_memfd_hugetlb_test guest_memfd_stress_test \
	set_memory_region_test pre_fault_memory_test \
	x86_64/private_mem_conversions_test x86_64/private_mem_kvm_exits_test
OWN_TESTS := $(patsubst tests/src/%.c,%,$(wildcard tests/src/*.c))

# Programs that run a guest, on the KVM selftests library: the demos, and
# benchmarks that need a vCPU.
GUEST_PROGS := $(patsubst tests/demo/%.c,%,$(wildcard tests/demo/*.c)) \
	$(patsubst tests/guest/%.c,%,$(wildcard tests/guest/*.c))
vpath %.c tests/demo tests/guest

all: $(addprefix $(OUT)/mm/,$(MM_TESTS)) kvm $(addprefix $(OUT)/own/,$(OWN_TESTS)) \
	$(addprefix $(OUT)/own/,$(GUEST_PROGS))

# ---- mm: liburing is linked in when present, as upstream's probe does
MM_CFLAGS := -static -Wall -O2 -U_FORTIFY_SOURCE -no-pie -isystem $(abspath $(HDR)) \
	-fmacro-prefix-map=$(SELF)/mm/= \
	-I$(OUT)/mm/config -I$(SELF) -I$(KSRC) -I$(KSRC)/tools/include/uapi
MM_LIBS   := $(if $(wildcard /usr/include/liburing.h),-luring) -lrt -lpthread -lm

$(OUT)/mm/config/local_config.h:
	@mkdir -p $(@D)
	@echo '$(if $(wildcard /usr/include/liburing.h),#define LOCAL_CONFIG_HAVE_LIBURING 1,/* no liburing */)' > $@

$(OUT)/mm/%: $(SELF)/mm/%.c $(SELF)/mm/vm_util.c $(SELF)/mm/thp_settings.c $(OUT)/mm/config/local_config.h
	@mkdir -p $(@D)
	$(CC) $(MM_CFLAGS) $< $(SELF)/mm/vm_util.c $(SELF)/mm/thp_settings.c $(MM_LIBS) -o $@

# ---- KVM: upstream's Makefile, output and headers redirected
kvm:
	$(MAKE) -C $(SELF)/kvm OUTPUT=$(abspath $(OUT)/kvm) \
		INSTALL_HDR_PATH=$(abspath $(HDR)/..) KHDR_INCLUDES="-isystem $(abspath $(HDR))" \
		EXTRA_CFLAGS=-static $(addprefix $(abspath $(OUT)/kvm)/,$(KVM_TESTS))

# ---- ours (until they move into the series as kselftests)
$(OUT)/own/%: tests/src/%.c $(wildcard tests/src/*.h)
	@mkdir -p $(@D)
	$(CC) -static -Wall -O2 -isystem $(abspath $(HDR)) -I$(SELF) \
		-I$(KSRC)/drivers/iommu/iommufd -Itests/src $< -o $@

# ---- make demo's VMM: our source, linked against the KVM selftests library
# that the kvm target builds, with the flags upstream's kvm/Makefile uses.
# KVM_LIB is that Makefile's LIBKVM for x86_64 (and LIBKVM_STRING).
KVM_LIB := assert elf guest_modes io kvm_util memstress guest_sprintf rbtree \
	sparsebit test_util ucall_common userfaultfd_util x86_64/apic x86_64/handlers \
	x86_64/hyperv x86_64/memstress x86_64/pmu x86_64/processor x86_64/sev \
	x86_64/svm x86_64/ucall x86_64/vmx string_override
KVM_LIB_OBJS := $(patsubst %,$(OUT)/kvm/lib/%.o,$(KVM_LIB))
KVM_CFLAGS := -D_GNU_SOURCE= -Wall -Wstrict-prototypes -Wuninitialized -O2 -g -std=gnu99 \
	-DCONFIG_64BIT -U_FORTIFY_SOURCE -fno-builtin-memcmp -fno-builtin-memcpy \
	-fno-builtin-memset -fno-builtin-strnlen -fno-stack-protector -fno-PIE \
	-fno-strict-aliasing -march=x86-64-v2 -static -pthread -no-pie \
	-I$(KSRC)/tools/include -I$(KSRC)/tools/arch/x86/include -isystem $(abspath $(HDR)) \
	-I$(SELF)/kvm/include -I$(SELF)/kvm/include/x86_64 -I$(SELF) -Itests/src

# The library's objects are the kvm target's; this rule only names them.
$(KVM_LIB_OBJS): kvm ;

$(addprefix $(OUT)/own/,$(GUEST_PROGS)): $(OUT)/own/%: %.c $(wildcard tests/src/*.h) $(KVM_LIB_OBJS)
	@mkdir -p $(@D)
	$(CC) $(KVM_CFLAGS) $< $(KVM_LIB_OBJS) -ldl -o $@

.PHONY: all kvm
