"""Run an action's argv: no shell, its own process group, a hard timeout, bounded output.

A hung action is stopped with SIGTERM to its whole process group, then SIGKILL after a short
grace period, so that children it started (a `sleep` in a script, a hung `curl`) go too. Output
is read by a thread that keeps only the last OUTPUT_KEEP_BYTES, so an action that prints
without end cannot fill the remediator's memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OUTPUT_KEEP_BYTES = 64 * 1024
KILL_GRACE_SECONDS = 2.0
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int | None
    """None when the process had to be killed at its timeout."""
    timed_out: bool
    output: str


def run_process(argv: Sequence[str], timeout_seconds: float,
                extra_env: Mapping[str, str] | None = None) -> ProcessResult:
    """Run argv to completion or timeout; OSError if it cannot be started."""
    environment = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", **(extra_env or {})}
    process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                               env=environment, cwd="/")
    collected = bytearray()
    reader = threading.Thread(target=_keep_tail, args=(process.stdout, collected), daemon=True)
    reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop_group(process)
    # Output still held by a child that left the group does not hold up the result.
    reader.join(timeout=1.0)
    return ProcessResult(None if timed_out else process.returncode, timed_out,
                         bytes(collected).decode(errors="replace"))


def _keep_tail(stream, collected: bytearray) -> None:
    with contextlib.suppress(OSError, ValueError):
        for chunk in iter(lambda: stream.read1(8192), b""):
            collected.extend(chunk)
            if len(collected) > OUTPUT_KEEP_BYTES:
                del collected[:len(collected) - OUTPUT_KEEP_BYTES]


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after the grace period; reap the leader."""
    group = process.pid  # start_new_session: the leader's pid is the group id
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline and _group_alive(group):
        time.sleep(0.05)
        process.poll()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    process.wait()


def _group_alive(group: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: an orphaned child is
    reaped by init, which in a container may never happen."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    if not entries:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp.
        if int(fields[2]) == group and fields[0] != b"Z":
            return True
    return False
