"""Boot a kernel in QEMU as described by tests/boots.py, collect the
results, and fail on any failed test, timeout or kernel splat.

Used by tests/run (make test, make demo) and bench/run (make bench).
"""
import argparse
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from boots import BOOTS, qemu_command

HERE = Path(__file__).parent
STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
RESULT = re.compile(r"^(not )?ok (\d+) (\S+)(?: # (.*))?$")
PLAN = re.compile(r"^1\.\.(\d+)$")
# Kernel splats. Matched anywhere in a console line; see tests/benign-console
# for the few lines that match but are not splats.
SPLAT = re.compile(r"BUG:|WARNING:|Oops|general protection fault|Kernel panic|"
                   r"KASAN|UBSAN|possible circular locking|inconsistent lock state|"
                   r"possible recursive locking|blocked for more than|soft lockup|"
                   r"hard LOCKUP|Call Trace:|kernel BUG at|list_(add|del) corruption")
# An allocation failure injected by fail_page_alloc or failslab (verbose 2)
# prints this, then its stack: the stack is no splat, and it says where the
# failure hit (fault_sites()).
FAULT = re.compile(r"FAULT_INJECTION: forcing a failure")
FRAME = re.compile(r"^\s*(\?\s+)?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
# Frames of the fault injection and of the allocators themselves.
ALLOCATOR = re.compile(r"dump_stack|should_fail|fail_dump|alloc|slab|kmalloc|"
                       r"kmem_cache|get_page_from_freelist")


def load_table(name):
    """Lines 'KEY  REASON' of a tests/ file, comments and blanks skipped."""
    rows = {}
    for line in (HERE / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, reason = line.strip().partition(" ")
            rows[key] = reason.strip()
    return rows


@dataclass
class Outcome:
    name: str
    status: str         # pass, fail, skip
    note: str = ""


@dataclass
class Result:
    boot: str
    outcomes: list = field(default_factory=list)
    seconds: float = 0.0
    lines: list = field(default_factory=list)

    def count(self, status):
        return sum(o.status == status for o in self.outcomes)


def console_lines(log):
    for raw in log.read_text(errors="replace").splitlines():
        yield raw.rstrip("\r")


def userspace_outcomes(lines):
    planned, seen = None, {}
    for line in lines:
        if m := PLAN.match(line):
            planned = int(m.group(1))
        elif m := RESULT.match(line):
            failed, num, name, note = m.group(1), int(m.group(2)), m.group(3), m.group(4) or ""
            status = "fail" if failed else "skip" if note.startswith("SKIP") else "pass"
            seen[num] = Outcome(name, status, note)
    outcomes = [seen[k] for k in sorted(seen)]
    if planned is None:
        outcomes.append(Outcome("runner", "fail", "the guest runner never started"))
    elif len(seen) < planned:
        outcomes.append(Outcome("runner", "fail",
                                f"{planned - len(seen)} of {planned} tests never reported"))
    return outcomes


def kunit_outcomes(lines):
    """KTAP from the kernel: count every test case (indent 4) of every suite."""
    outcomes, suite, suites = [], "?", 0
    for line in lines:
        line = STAMP.sub("", line)
        if m := re.match(r"^    # Subtest: (\S+)", line):
            suite = m.group(1)
        elif line.startswith("    ") and (m := RESULT.match(line[4:])):
            failed, note = m.group(1), m.group(4) or ""
            status = "fail" if failed else "skip" if note.startswith("SKIP") else "pass"
            outcomes.append(Outcome(f"{suite}.{m.group(3)}", status, note))
        elif RESULT.match(line):
            suites += 1
    if not suites:
        outcomes.append(Outcome("kunit", "fail", "no KUnit suite reported"))
    return outcomes


def fault_reports(lines):
    """Each injected failure's stack: its reliable frames, innermost first,
    and the indexes of its lines."""
    i = 0
    while i < len(lines):
        if not FAULT.search(lines[i]):
            i += 1
            continue
        end = i + 1
        while end < len(lines) and "</TASK>" not in lines[end] and end - i < 400:
            end += 1
        frames = [m.group(2) for line in lines[i:end]
                  if (m := FRAME.match(STAMP.sub("", line))) and not m.group(1)]
        yield frames, range(i, end + 1)
        i = end + 1


def fault_site(frames):
    """Where an injected failure hit: the first guest_memfd function on the
    stack, with the call it allocated through; else the first function past
    the allocators."""
    for k, f in enumerate(frames):
        if f.startswith("kvm_gmem_"):
            return f"{f} -> {frames[k - 1]}" if k else f
    for k, f in enumerate(frames):
        if not ALLOCATOR.search(f):
            return f"(not guest_memfd) {f} -> {frames[k - 1]}" if k else f
    return "(no stack)"


def fault_sites(lines):
    """How many injected failures hit each site."""
    return Counter(fault_site(frames) for frames, _ in fault_reports(lines))


def splats(lines, benign):
    """Splat lines; the stack an injected failure prints is not one."""
    injected = {i for _, span in fault_reports(lines) for i in span}
    bad = []
    for i, line in enumerate(lines):
        if i in injected and "Call Trace:" in line:
            continue
        if SPLAT.search(line) and not any(re.search(p, line) for p in benign):
            bad.append(line)
    return bad


def apply_known_failures(boot, outcomes, known, skips_ok=False):
    """tests/known-failures: a listed test that fails or skips is reported as
    skipped with its reason, and one that passes fails the run; a skip that
    is not listed fails (unless @skips_ok: make bench's base kernel lacks
    what the series-only benchmarks measure), so that a test whose oracle
    is missing cannot pass."""
    for o in outcomes:
        reason = known.get(f"{boot}/{o.name}")
        if reason is None:
            if o.status == "skip" and not skips_ok:
                o.status, o.note = "fail", (f"skipped ({o.note}): give the test what it "
                                            "needs, or list it in tests/known-failures")
        elif o.status in ("fail", "skip"):
            o.status, o.note = "skip", f"known: {reason}"
        else:
            o.status, o.note = "fail", "passes now: remove it from tests/known-failures"


class Console:
    """Streams QEMU's serial console to a log, with an optional live view."""

    def __init__(self, proc, log, show):
        self.proc, self.log, self.show = proc, log, show
        self.thread = threading.Thread(target=self.pump, daemon=True)
        self.thread.start()

    def pump(self):
        with open(self.log, "w") as out:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                out.write(line + "\n")
                out.flush()
                self.show(line)


def run_boot(boot, args, show, tag=None, skips_ok=False):
    """One boot; its console goes to <logs>/<tag or boot name>.log."""
    log = Path(args.logs) / f"{tag or boot.name}.log"
    cmd = qemu_command(boot, args.kernel[boot.kernel], args.initrd[boot.kernel])
    log.with_suffix(".cmd").write_text(shlex.join(cmd) + "\n")
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    console = Console(proc, log, show)
    timed_out = False
    try:
        proc.wait(timeout=boot.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    console.thread.join(timeout=10)
    result = Result(boot.name, seconds=time.time() - start)
    lines = result.lines = list(console_lines(log))
    parse = kunit_outcomes if boot.kind == "kunit" else userspace_outcomes
    result.outcomes = parse(lines)
    apply_known_failures(boot.name, result.outcomes, load_table("known-failures"),
                         skips_ok)
    if timed_out:
        result.outcomes.append(Outcome("boot", "fail", f"timed out after {boot.timeout}s"))
    bad = splats(lines, load_table("benign-console").keys())
    result.outcomes.append(Outcome("console", "fail" if bad else "pass",
                                   f"{len(bad)} splat line(s)" if bad else "clean"))
    sites = fault_sites(lines)
    if sites:
        print(f"  {boot.name}: {sum(sites.values())} allocation failure(s) injected, "
              f"at {len(sites)} site(s):")
        for site, n in sorted(sites.items()):
            print(f"    {n:5}  {site}")
    if bad or timed_out:
        print(f"  {boot.name}: console lines that fail the boot (full log: {log}):")
        for line in (bad[:30] if bad else lines[-30:]):
            print(f"    | {line}")
    return result


def live_view(boot_name):
    """Prints each test result as the guest reports it."""
    def show(line):
        m = RESULT.match(line)
        if m:
            print(f"  {boot_name}: {line}", flush=True)
    return show


# A line of the demo's story: "[  1234 ms] ...", indented by the guest runner.
STORY = re.compile(r"^\s+\[\s*\d+ ms\] ")


def story_view(boot_name):
    """The demo's narration: what booted, what runs, the story the programs
    tell (tests/demo/gmem_demo.c), each result; a failed program's other
    output too."""
    unshown = []

    def show(line):
        if "harness: boot" in line:     # SeaBIOS may leave escapes before it
            print(f"  The guest is up: {line.split(' on ', 1)[1]}", flush=True)
        elif line.startswith("# harness: run"):
            unshown.clear()
            print(f"  Running {line.split('run ', 1)[1]}", flush=True)
        elif STORY.match(line):
            print(f"    {line.strip()}", flush=True)
        elif m := RESULT.match(line.strip()):
            if m.group(1):
                for other in unshown[-20:]:
                    print(f"    | {other.strip()}", flush=True)
            mark = "FAILED" if m.group(1) else "ok"
            print(f"    {mark:6} {m.group(3)}", flush=True)
        elif line.strip().startswith("# PASSED") or line.strip().startswith("# Totals"):
            print(f"    {line.strip()[2:]}", flush=True)
        elif line.startswith("    "):
            unshown.append(line)
    return show


DEMO_INTRO = """\
make demo: the kernel built from the base plus patches/ (KASAN, lockdep,
DEBUG_VM) boots in QEMU (TCG, EPYC with SVM, intel-iommu, the edu PCI
device). Inside it a small VMM (tests/demo/gmem_demo.c) runs a nested-KVM
guest whose memory is a guest_memfd that the host maps and that edu pins
for DMA through VFIO. The guest asks for the memory to become private:
upstream answers EAGAIN while the device holds its pins; with the series
the pages are pending until the device's last reference drops, and the
conversion then completes, content kept. A second VMM
(tests/demo/gmem_hugetlb_demo.c) backs its guest with one 1 GiB hugetlb
page and shares 4 KiB of it with edu: the page splits only as far as
that needs, and is put back together - mapped at 1 GiB again, then
returned to the pool - on the device's last unpin. Each line: ms since
the VMM began.
"""


def demo_summary(results):
    lines = [line for r in results for line in r.lines]
    booted = next((line.split(" on ", 1)[1] for line in lines
                   if "harness: boot" in line), "nothing (see the log)")
    tests = [o for r in results for o in r.outcomes if o.name != "console"]
    clean = all(o.status == "pass" for r in results for o in r.outcomes if o.name == "console")
    return (f"\nIn short: booted {booted}; ran {', '.join(o.name for o in tests)}; "
            f"{sum(o.status == 'pass' for o in tests)} of {len(tests)} passed; "
            f"console {'clean' if clean else 'NOT clean: see above'}.")


def by_flavour(values):
    """--kernel/--initrd values: PATH for the debug kernel, FLAVOUR=PATH for another."""
    paths = {}
    for value in values:
        flavour, _, path = value.rpartition("=")
        paths[flavour or "debug"] = path
    return paths


def boot_table(names):
    """The boots by name; exits naming any that tests/boots.py lacks."""
    table = {b.name: b for b in BOOTS}
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"unknown boot(s) {', '.join(unknown)}; known: {', '.join(table)}")
    return table


def main(doc):
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True, action="append",
                    help="bzImage of the debug kernel; FLAVOUR=bzImage for another")
    ap.add_argument("--initrd", required=True, action="append",
                    help="its initramfs; FLAVOUR=initramfs for another flavour's")
    ap.add_argument("--logs", default="build/logs")
    ap.add_argument("--demo", action="store_true", help="narrate instead of listing results")
    ap.add_argument("boots", nargs="+", help="boot names from tests/boots.py")
    args = ap.parse_args()
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    table = boot_table(args.boots)
    args.kernel, args.initrd = by_flavour(args.kernel), by_flavour(args.initrd)
    for name in args.boots:
        flavour = table[name].kernel
        if flavour not in args.kernel or flavour not in args.initrd:
            sys.exit(f"boot {name} needs the {flavour} kernel: --kernel {flavour}=PATH "
                     f"--initrd {flavour}=PATH")

    if args.demo:
        print(DEMO_INTRO)
    results = []
    for name in args.boots:
        boot = table[name]
        print(f"[{time.strftime('%T')}] boot {name}: {boot.doc}", flush=True)
        view = story_view if args.demo else live_view
        results.append(run_boot(boot, args, view(name)))

    if args.demo:
        print(demo_summary(results))
    print("\nsummary")
    for r in results:
        for o in r.outcomes:
            if o.status != "pass":
                print(f"  {o.status.upper():5} {r.boot}/{o.name}  {o.note}")
        print(f"  {r.boot:6} {r.count('pass')} passed, {r.count('fail')} failed, "
              f"{r.count('skip')} skipped in {r.seconds:.0f}s")
    totals = {s: sum(r.count(s) for r in results) for s in ("pass", "fail", "skip")}
    print(f"{totals['pass']} passed, {totals['fail']} failed, {totals['skip']} skipped")
    sys.exit(1 if totals["fail"] else 0)

