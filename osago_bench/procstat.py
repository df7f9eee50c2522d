"""What a process has cost, read from Linux's /proc: CPU seconds (user + system, every thread)
and peak resident memory; and what the machine is."""

from __future__ import annotations

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


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds the process has used so far (all its threads; not its children)."""
    stat = (proc / str(pid) / "stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: count from after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS


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
