"""Reading /proc/PID: who a process is (to match it to a group) and what it uses right now.

Identity (name, command line, cgroups) is read by the process collector's background scan;
usage (CPU, memory, threads, fds) at scrape time for the matched pids only, which keeps a scrape
cheap on a host with thousands of processes. The start time in /proc/PID/stat tells a reused pid
apart from the process that was matched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Fields of /proc/PID/stat after the ")" closing the name: state is field 3 of proc(5), so
# field N is at index N - 3.
_UTIME, _STIME, _THREADS, _START, _RSS = 14 - 3, 15 - 3, 20 - 3, 22 - 3, 24 - 3


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_ticks: int
    comm: str
    argv: tuple[str, ...]
    cgroups: tuple[str, ...]


@dataclass(frozen=True)
class ProcessUsage:
    start_ticks: int
    user_seconds: float
    system_seconds: float
    threads: int
    resident_bytes: int
    open_fds: int | None  # None: not readable (another user's process, exporter not root)


def list_pids(proc_path: str) -> list[int]:
    return [int(entry) for entry in os.listdir(proc_path) if entry.isdigit()]


def _stat(proc_path: str, pid: int) -> tuple[str, list[str]] | None:
    """(comm, fields after the name) from /proc/PID/stat; None if the process is gone."""
    try:
        with open(f"{proc_path}/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    opening, closing = text.find("("), text.rfind(")")  # the name may hold spaces and ")"
    if opening < 0 or closing < opening:
        return None
    return text[opening + 1:closing], text[closing + 2:].split()


def read_identity(proc_path: str, pid: int, with_cgroups: bool) -> ProcessIdentity | None:
    """None for a process that is gone, a zombie, or a kernel thread (no command line)."""
    stat = _stat(proc_path, pid)
    if stat is None or stat[1][0] == "Z":
        return None
    try:
        with open(f"{proc_path}/{pid}/cmdline", "rb") as handle:
            argv = tuple(part.decode(errors="replace")
                         for part in handle.read().rstrip(b"\0").split(b"\0") if part)
        cgroups: tuple[str, ...] = ()
        if with_cgroups:
            with open(f"{proc_path}/{pid}/cgroup", "rb") as handle:
                cgroups = tuple(line.split(":", 2)[2]
                                for line in handle.read().decode(errors="replace").splitlines()
                                if line.count(":") >= 2)
    except OSError:
        return None
    if not argv:
        return None
    return ProcessIdentity(pid, int(stat[1][_START]), stat[0], argv, cgroups)


def read_usage(proc_path: str, pid: int) -> ProcessUsage | None:
    """None if the process is gone (or became a zombie)."""
    stat = _stat(proc_path, pid)
    if stat is None or stat[1][0] == "Z":
        return None
    fields = stat[1]
    try:
        open_fds: int | None = len(os.listdir(f"{proc_path}/{pid}/fd"))
    except PermissionError:
        open_fds = None
    except OSError:
        return None
    return ProcessUsage(start_ticks=int(fields[_START]),
                        user_seconds=int(fields[_UTIME]) / CLOCK_TICKS_PER_SECOND,
                        system_seconds=int(fields[_STIME]) / CLOCK_TICKS_PER_SECOND,
                        threads=int(fields[_THREADS]),
                        resident_bytes=int(fields[_RSS]) * PAGE_BYTES,
                        open_fds=open_fds)
