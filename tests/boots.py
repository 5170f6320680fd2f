"""The boot matrix, as data. tests/run turns each entry into one QEMU boot.

A boot runs the debug kernel and its initramfs unless `kernel` names another
flavour (build/obj-<kernel>, with its own initramfs). The debug kernel builds
KVM as modules: /init loads those that `modprobe` names before the tests
(the modules boot loads and unloads them itself); `list` names the file
under tests/lists/ whose tests the guest runs (or, for kind "kunit", the
KUnit suites that run inside the kernel at boot). A boot's `timeout` bounds
the whole boot; each test has its own timeout in its list.
"""
from dataclasses import dataclass, field

# Every boot: single-threaded TCG (MTTCG gave spurious oopses), an EPYC CPU
# with SVM and NPT so that nested KVM runs inside the guest.
QEMU = ["qemu-system-x86_64", "-accel", "tcg,thread=single",
        "-cpu", "EPYC,+svm,+npt", "-nographic", "-no-reboot",
        "-nic", "none", "-serial", "stdio", "-monitor", "none"]
CMDLINE = "console=ttyS0 panic=-1 oops=panic softlockup_panic=0 loglevel=7"
# QEMU's edu device behind an emulated Intel IOMMU, for VFIO device DMA
# (the kernel needs intel_iommu=on).
VIOMMU_EDU = ["-machine", "q35,kernel-irqchip=split",
              "-device", "intel-iommu,intremap=on", "-device", "edu"]


@dataclass
class Boot:
    name: str
    doc: str
    machine: list = field(default_factory=lambda: ["-machine", "q35"])
    memory: str = "4G"
    smp: str = "2"             # QEMU's -smp
    cmdline: str = ""
    list: str = ""
    kind: str = "userspace"     # or "kunit"
    timeout: int = 1500
    kernel: str = "debug"       # or "perf" (make bench)
    modprobe: list = field(default_factory=lambda: ["kvm_amd"])


# Two NUMA nodes, one CPU each: guest_memfd's NUMA policy test, and two
# 1 GiB hugetlb pages on node 1, which lies wholly above 4 GiB. Node 1 has
# 6 GiB: early allocations (KASAN's shadow, the memmap) take its top, and
# with 3 or 4 GiB they sometimes left a single aligned GiB free ("Only
# allocated 1 hugepages"); node 0's low memory holds the kernel and the
# initramfs. Each node is a socket of its own (the kvm boot's smp), as a
# CPU whose cache siblings sit on another node makes the kernel warn.
# HVO is off at boot; the hugetlb selftest's second run turns it on and refills
# the pools (tests/lists/kvm).
TWO_NODES = ["-machine", "q35",
             "-object", "memory-backend-ram,id=m0,size=3G",
             "-object", "memory-backend-ram,id=m1,size=6G",
             "-numa", "node,nodeid=0,cpus=0,memdev=m0",
             "-numa", "node,nodeid=1,cpus=1,memdev=m1"]


BOOTS = [
    Boot("kvm", "nested KVM (SVM), KVM_X86_SW_PROTECTED_VM: guest_memfd, conversions, hugetlb backing",
         machine=TWO_NODES, smp="2,sockets=2,cores=1,threads=1", memory="9G",
         cmdline="hugepagesz=2M hugepages=32 hugepagesz=1G hugepages=1:2 kunit.enable=0",
         list="kvm"),
    Boot("stress", "the kvm boot's machine: guest_memfd under concurrent load, minutes "
         "per page size, a new seed each run (make stress)",
         machine=TWO_NODES, smp="2,sockets=2,cores=1,threads=1", memory="9G",
         cmdline="hugepagesz=2M hugepages=32 hugepagesz=1G hugepages=1:2 kunit.enable=0",
         list="stress"),
    Boot("vfio", "intel-iommu + edu bound to vfio-pci: VFIO type1 long-term pins, device DMA",
         machine=VIOMMU_EDU,
         cmdline="intel_iommu=on hugepagesz=2M hugepages=32 kunit.enable=0", list="vfio"),
    Boot("modules", "KVM as modules: unloading it while a VFIO pin holds guest_memfd memory "
         "(a hugetlb page's piece too)",
         machine=VIOMMU_EDU, cmdline="intel_iommu=on hugepagesz=2M hugepages=4 kunit.enable=0",
         list="modules", modprobe=[]),
    Boot("mm", "no vIOMMU: GUP pins, hugetlb, hmm, iommufd mock-domain pins",
         cmdline="transparent_hugepage=madvise hugepagesz=2M hugepages=160 kunit.enable=0",
         list="mm"),
    Boot("demo", "the story: a guest_memfd-backed VM in nested KVM, its memory pinned by "
         "edu through intel-iommu, converted to private; then a guest in a 1 GiB hugetlb "
         "page sharing 4 KiB with edu (make demo)",
         machine=VIOMMU_EDU, memory="6G",
         cmdline="intel_iommu=on hugepagesz=1G hugepages=1 kunit.enable=0 quiet",
         list="demo", timeout=900),
    Boot("bench", "put-path, conversion and hugetlb split/merge benchmarks; guest time "
         "counts instructions (make bench)",
         machine=["-machine", "q35", "-icount", "shift=0,sleep=off"], memory="6G", smp="1",
         # Private memory stays in the direct map, as without the debug
         # check; convert_bench measures the check on its own files.
         cmdline="hugepagesz=2M hugepages=40 hugepagesz=1G hugepages=2 "
                 "transparent_hugepage=never kunit.enable=0 quiet slab_nomerge "
                 "kvm.gmem_unmap_private=0",
         list="bench", timeout=900),
    Boot("kunit", "built-in KUnit suites, run at boot",
         cmdline="kunit.enable=1", list="kunit", kind="kunit", timeout=900, modprobe=[]),
]


def qemu_command(boot, kernel, initrd):
    return QEMU + boot.machine + [
        "-m", boot.memory, "-smp", boot.smp,
        "-kernel", kernel, "-initrd", initrd,
        "-append", f"{CMDLINE} harness.list={boot.list} "
                   f"harness.modprobe={','.join(boot.modprobe)} {boot.cmdline}"]
