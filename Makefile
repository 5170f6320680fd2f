# Entry point for every job on the guest_memfd last-reference series.
# `make help` lists the targets; README.md tells the story.

# The base: Debian's linux-source-6.12, pinned here and nowhere else.
LINUX_PIN     ?= 6.12.117-1~deb12u1
LINUX_TARBALL := /usr/src/linux-source-6.12.tar.xz

B       := build
KSRC    := $(B)/linux
LOGS    := $(B)/logs
T       ?= kvm vfio modules mm kunit
JOBS    ?= $(shell nproc)
FORCE   ?= 0
export LINUX_PIN FORCE

# The compiler cache lives outside the clone, so a fresh clone (CI) on the
# same machine reuses it; paths below the clone are hashed relative to it.
CCACHE_DIR      ?= /var/cache/gmem-series/ccache
export CCACHE_DIR
export CCACHE_BASEDIR  := $(CURDIR)
export CCACHE_NOHASHDIR := true
export CCACHE_MAXSIZE  ?= 20G

STEP  := scripts/step
DEPS  := $(B)/stamp/deps
TREE  := $(B)/stamp/tree

.PHONY: help demo test stress deps tree export kernel kernel-perf \
	selftests initramfs check bisect-check bench clean distclean

help:
	@sed -n 's/^## //p' Makefile
	@echo "make test T=kvm   runs one boot (boots: kvm vfio modules mm kunit)"

## make demo        boot the series and tell its story
demo: $(B)/obj-debug/arch/x86/boot/bzImage $(B)/initramfs.cpio.gz
	@tests/run --demo --kernel $(B)/obj-debug/arch/x86/boot/bzImage \
		--initrd $(B)/initramfs.cpio.gz --logs $(LOGS) demo

## make test        build everything and run every boot (T="kvm mm" for some)
test: $(B)/obj-debug/arch/x86/boot/bzImage $(B)/initramfs.cpio.gz
	@tests/run --kernel $(B)/obj-debug/arch/x86/boot/bzImage \
		--initrd $(B)/initramfs.cpio.gz --logs $(LOGS) $(T)

# ---------------------------------------------------------------- packages
PACKAGES := build-essential bc bison flex libelf-dev libssl-dev rsync ccache git \
	qemu-system-x86 busybox-static cpio xz-utils kmod python3 python3-ply python3-git \
	liburing-dev file

## make stress      guest_memfd under load for 10 minutes, new seeds (not in CI)
stress: $(B)/obj-debug/arch/x86/boot/bzImage $(B)/initramfs.cpio.gz
	@tests/run --kernel $(B)/obj-debug/arch/x86/boot/bzImage \
		--initrd $(B)/initramfs.cpio.gz --logs $(LOGS) stress

## make deps        apt-get update, then install every package the jobs use
deps:
	@rm -f $(DEPS)
	@$(MAKE) --no-print-directory $(DEPS) DEPS_UPDATE=1

$(DEPS): scripts/deps Makefile
	@PACKAGES="$(PACKAGES)" DEPS_UPDATE=$(DEPS_UPDATE) scripts/deps
	@mkdir -p $(@D) && touch $@

# ---------------------------------------------------------------- the tree
## make tree        build/linux: the base as one commit tagged `base`, then patches/
tree: $(DEPS)
	@scripts/tree $(LINUX_TARBALL) $(KSRC) patches

# Rebuild the tree only when patches/ changed (scripts/tree keeps what it can).
$(TREE): $(DEPS) patches/series $(wildcard patches/*.patch)
	@scripts/tree $(LINUX_TARBALL) $(KSRC) patches
	@mkdir -p $(@D) && touch $@

## make export      write build/linux's base..HEAD back to patches/
export:
	@scripts/export $(KSRC) patches

# ---------------------------------------------------------------- kernels
# config/common: features every kernel has; config/series: options that only
# the series provides; config/debug, config/perf: the two flavours.
DEBUG_CONFIG := config/common config/series config/debug
PERF_CONFIG  := config/common config/series config/perf
BASE_SRC     := $(B)/linux-base

# One rule makes each kernel: $(1) flavour (O=build/obj-$(1)), $(2) config
# fragments, $(3) source tree, $(4) what the source tree is made by.
define kernel_rule
$(B)/obj-$(1)/.config: $(4) $(2) scripts/kconfig
	@$(STEP) "kconfig $(1)" $(LOGS)/kconfig-$(1).log scripts/kconfig $(3) $(B)/obj-$(1) $(2)

$(B)/obj-$(1)/arch/x86/boot/bzImage: $(B)/obj-$(1)/.config FORCE_KBUILD
	@$(STEP) "build kernel ($(1))" $(LOGS)/build-$(1).log \
		$(MAKE) -C $(3) O=$(CURDIR)/$(B)/obj-$(1) CC="ccache gcc" -j$(JOBS) bzImage modules
	@$(STEP) "headers ($(1))" $(LOGS)/headers-$(1).log \
		$(MAKE) -C $(3) O=$(CURDIR)/$(B)/obj-$(1) headers_install
endef
$(eval $(call kernel_rule,debug,$(DEBUG_CONFIG),$(KSRC),$(TREE)))
$(eval $(call kernel_rule,perf,$(PERF_CONFIG),$(KSRC),$(TREE)))
$(eval $(call kernel_rule,perf-base,config/common config/perf,$(BASE_SRC),$(BASE_SRC)/Makefile))
.PHONY: FORCE_KBUILD
FORCE_KBUILD:

# The base alone, for side-by-side benchmarks: a worktree of build/linux.
$(BASE_SRC)/Makefile: $(TREE)
	@git -C $(KSRC) worktree prune
	@[ -d $(BASE_SRC) ] || git -C $(KSRC) worktree add -q --detach $(CURDIR)/$(BASE_SRC) base

## make kernel      the debug kernel every test boot uses (build/obj-debug)
kernel: $(B)/obj-debug/arch/x86/boot/bzImage
## make kernel-perf the benchmark kernel, no debug options (build/obj-perf)
kernel-perf: $(B)/obj-perf/arch/x86/boot/bzImage

# ---------------------------------------------------------------- userspace
## make selftests   the static test binaries, against the tree's headers
selftests: $(B)/obj-debug/arch/x86/boot/bzImage
	@$(STEP) "selftests" $(LOGS)/selftests.log \
		$(MAKE) -f tests/selftests.mk KSRC=$(KSRC) HDR=$(B)/obj-debug/usr/include OUT=$(B)/selftests

## make initramfs   busybox + test binaries + the guest runner
initramfs: $(B)/initramfs.cpio.gz
# Busybox, the test binaries and the debug kernel's modules (KVM is a
# module there, as distributions build it; /init loads what a boot names).
$(B)/initramfs.cpio.gz: selftests tests/init tests/mkinitramfs $(wildcard tests/lists/*)
	@rm -rf $(B)/modules-debug
	@$(STEP) "modules (debug)" $(LOGS)/modules-debug.log \
		$(MAKE) -C $(KSRC) O=$(CURDIR)/$(B)/obj-debug \
		INSTALL_MOD_PATH=$(CURDIR)/$(B)/modules-debug INSTALL_MOD_STRIP=1 modules_install
	@$(STEP) "initramfs" $(LOGS)/initramfs.log \
		tests/mkinitramfs $(B)/selftests $@ $(B)/modules-debug

# ---------------------------------------------------------------- checks
## make bench       base vs series, side by side: put-path ratios and code size
ROUNDS ?= 3
bench: $(B)/obj-perf/arch/x86/boot/bzImage $(B)/obj-perf-base/arch/x86/boot/bzImage $(B)/initramfs.cpio.gz
	@echo "hot-path code size, base -> series (scripts/bloat-o-meter):"
	@$(KSRC)/scripts/bloat-o-meter $(B)/obj-perf-base/vmlinux $(B)/obj-perf/vmlinux | \
		grep -E '^(add/remove|Function|Total)|__folio_put|folios_put_refs|put_pages_list|free_typed_folio' | sed 's/^/  /'
	@bench/run --base $(B)/obj-perf-base/arch/x86/boot/bzImage \
		--series $(B)/obj-perf/arch/x86/boot/bzImage \
		--initrd $(B)/initramfs.cpio.gz --rounds $(ROUNDS) --out $(B)/bench

## make check       checkpatch --strict on every patch; build the debug kernel (KVM=m)
check: $(TREE)
	@scripts/checkpatch $(KSRC) patches
	@$(MAKE) --no-print-directory $(B)/obj-debug/arch/x86/boot/bzImage

## make bisect-check  build and boot (KUnit) every prefix of the series (slow;
##                   FROM=N starts at patch N, e.g. after changing only the last)
FROM ?= 1
bisect-check: $(TREE) $(B)/obj-debug/.config $(B)/initramfs.cpio.gz
	@scripts/bisect-check $(KSRC) $(B)/obj-bisect $(LOGS) $(B)/initramfs.cpio.gz $(FROM)

## make clean       remove builds, logs and images; keep build/linux
clean:
	rm -rf $(B)/obj-* $(B)/selftests $(B)/initramfs* $(B)/logs $(B)/bench $(B)/stamp/tree

## make distclean   remove build/ entirely (refuses if build/linux has unexported work)
distclean:
	@scripts/tree --check-exported $(KSRC) patches
	rm -rf $(B)
