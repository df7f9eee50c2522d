"""What a process has cost, read from Linux's /proc: CPU seconds (user + system, every thread)
and peak resident memory; and what the machine is."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    # VmHWM: the most resident memory the process has had, in kibibytes.
    peak_rss_kib: int


def _stat_fields(pid: int, proc: Path) -> list[str]:
    """/proc/PID/stat from field 3 on (the command name, field 2, is in parentheses and may
    hold spaces: counted from after it)."""
    stat = (proc / str(pid) / "stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, proc: Path = Path("/proc"), *, reaped_children: bool = False) -> float:
    """User + system CPU seconds the process has used so far (all its threads), and with
    `reaped_children` those of its children that exited and were waited for."""
    fields = _stat_fields(pid, proc)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICKS


def peak_rss_kib(pid: int, proc: Path = Path("/proc")) -> int:
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def sample(pid: int, proc: Path = Path("/proc")) -> ProcSample | None:
    """The process's CPU and peak memory; None once it is gone."""
    try:
        return ProcSample(cpu_seconds(pid, proc), peak_rss_kib(pid, proc))
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def sample_group(pids: list[int], proc: Path = Path("/proc")) -> ProcSample | None:
    """One process, or a server's processes (the first its parent, e.g. PostgreSQL's postmaster,
    whose exited children's CPU counts with it; its live children are found anew each time):
    their CPU together and the largest peak memory. None once the first is gone."""
    if len(pids) == 1:
        return sample(pids[0], proc)
    try:
        root = pids[0]
        members = [root, *children(root, proc)]
        cpu = cpu_seconds(root, proc, reaped_children=True)
        peak = peak_rss_kib(root, proc)
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    for pid in members[1:]:
        part = sample(pid, proc)
        if part is not None:  # a child that exited meanwhile is counted by its parent
            cpu += part.cpu_s
            peak = max(peak, part.peak_rss_kib)
    return ProcSample(cpu, peak)


def children(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name), proc)[1]) == pid:  # field 4: ppid
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return sorted(found)


def server_processes(port: int, proc: Path = Path("/proc")) -> list[int]:
    """The process listening on TCP `port` on this machine, then its children (a server such as
    PostgreSQL serves each connection from a child); [] when none is found."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        path = proc / "net" / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])  # state 0A: listening
    sockets = {f"socket:[{inode}]" for inode in inodes}
    owners: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(str(fd.readlink()) in sockets for fd in (entry / "fd").iterdir()):
                owners.add(int(entry.name))
        except OSError:
            continue
    # The listener whose parent is not a listener too: the server's main process.
    main = [pid for pid in owners if int(_stat_fields(pid, proc)[1]) not in owners]
    return [main[0], *children(main[0], proc)] if main else []


def renice(pid: int, nice: int, proc: Path = Path("/proc")) -> dict[int, int]:
    """Sets the nice value of every thread of process `pid` (Linux's setpriority acts on one
    thread; threads made later inherit their creator's); returns each thread's value before, to
    put back (`restore_nice`). A thread that ended meanwhile is passed over. Raises OSError when
    not allowed (lowering a value needs root or CAP_SYS_NICE)."""
    before: dict[int, int] = {}
    for task in (proc / str(pid) / "task").iterdir():
        if not task.name.isdigit():
            continue
        tid = int(task.name)
        try:
            was = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            continue
        before[tid] = was
    return before


def restore_nice(before: dict[int, int]) -> None:
    """Puts back the values `renice` returned, for the threads still there (best effort: raising
    a value back up may not be allowed to whoever lowered it)."""
    for tid, nice in before.items():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def nice_of(pid: int, proc: Path = Path("/proc")) -> int:
    """The nice value of process `pid`'s main thread (field 19 of /proc/PID/stat)."""
    return int(_stat_fields(pid, proc)[16])


def machine_busy_seconds(proc: Path = Path("/proc")) -> float:
    """CPU seconds every core has spent busy since boot (user, nice, system, irq, softirq, steal):
    the difference over a window, less what the benchmark's processes used, is what everything
    else on the machine took meanwhile."""
    first = (proc / "stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def machine(proc: Path = Path("/proc")) -> dict[str, object]:
    """Cores, CPU model, memory and load: what the numbers were measured on."""
    model = ""
    cpuinfo = proc / "cpuinfo"
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    meminfo = proc / "meminfo"
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
