# Entry point for every job on the guest_memfd last-reference series.
# `make help` lists the targets; README.md tells the story.

# The base: Debian's linux-source-6.12, pinned here and nowhere else.
LINUX_PIN     ?= 6.12.117-1~deb12u1
LINUX_TARBALL := /usr/src/linux-source-6.12.tar.xz

B       := build
KSRC    := $(B)/linux
LOGS    := $(B)/logs
T       ?= kvm vfio mm kunit
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

.PHONY: help demo test kunit deps tree export kernel kernel-perf \
	selftests initramfs check bisect-check clean distclean

help:
	@sed -n 's/^## //p' README.md 2>/dev/null | head -40 || true
	@echo "targets: demo test deps tree export kernel kernel-perf selftests initramfs check bisect-check clean distclean"
	@echo "  make test T=kvm    runs one boot (boots: kvm vfio mm kunit)"

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
	qemu-system-x86 busybox-static cpio xz-utils kmod python3 liburing-dev file

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
# One rule makes each flavour: O=build/obj-<flavour>, config from fragments.
define kernel_rule
$(B)/obj-$(1)/.config: $(TREE) config/common $(2) scripts/kconfig
	@$(STEP) "kconfig $(1)" $(LOGS)/kconfig-$(1).log scripts/kconfig $(KSRC) $(B)/obj-$(1) config/common $(2)

$(B)/obj-$(1)/arch/x86/boot/bzImage: $(B)/obj-$(1)/.config FORCE_KBUILD
	@$(STEP) "build kernel ($(1))" $(LOGS)/build-$(1).log \
		$(MAKE) -C $(KSRC) O=$(CURDIR)/$(B)/obj-$(1) CC="ccache gcc" -j$(JOBS) bzImage modules
	@$(STEP) "headers ($(1))" $(LOGS)/headers-$(1).log \
		$(MAKE) -C $(KSRC) O=$(CURDIR)/$(B)/obj-$(1) headers_install
endef
$(eval $(call kernel_rule,debug,config/debug))
$(eval $(call kernel_rule,perf,config/perf))
.PHONY: FORCE_KBUILD
FORCE_KBUILD:

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
$(B)/initramfs.cpio.gz: selftests tests/init tests/mkinitramfs $(wildcard tests/lists/*)
	@$(STEP) "initramfs" $(LOGS)/initramfs.log tests/mkinitramfs $(B)/selftests $@

# ---------------------------------------------------------------- checks
## make check       checkpatch --strict on every patch
check: $(TREE)
	@scripts/checkpatch $(KSRC) patches

## make bisect-check  build every prefix of the series (incremental, slow)
bisect-check: $(TREE) $(B)/obj-debug/.config
	@scripts/bisect-check $(KSRC) $(B)/obj-bisect $(LOGS)

## make clean       remove builds, logs and images; keep build/linux
clean:
	rm -rf $(B)/obj-* $(B)/selftests $(B)/initramfs* $(B)/logs $(B)/bench $(B)/stamp/tree

## make distclean   remove build/ entirely (refuses if build/linux has unexported work)
distclean:
	@scripts/tree --check-exported $(KSRC) patches
	rm -rf $(B)
