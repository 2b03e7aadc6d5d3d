"""Detectors on disk, so that a restarted sidecar resumes where it stopped: what its model
learned and every series' streaming state, so neither a refit nor a history read is needed.

Layout: <state-dir>/<scheduler>/<model>/<query>/ holds versions `v-<n>/` (the detector's own
files plus meta.json) and a `current` file naming the live version. A save is written to a
fresh version directory, every file fsynced, then `current` is replaced by rename (temp file,
fsync, rename), so a crash at any moment leaves the old or the new state, never a mix.
Anything unreadable or written for another configuration is reported and ignored: the caller
starts afresh (refits, and reads each series' history).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from anomaly_sidecar.detector import Detector

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
_META_FILE = "meta.json"
_POINTER_FILE = "current"


@dataclass(frozen=True)
class StoredDetector:
    fitted_at: float | None
    meta: dict[str, Any]


def job_directory(state_dir: Path, scheduler_alias: str, model_alias: str,
                  query_alias: str) -> Path:
    """Where one (scheduler, model, query) job keeps its state; aliases are URL-quoted so any
    alias is a safe single path component."""
    return state_dir / quote(scheduler_alias, safe="") / quote(model_alias, safe="") / quote(
        query_alias, safe="")


def write_atomically(path: Path, text: str) -> None:
    """Replace path with text: temp file in the same directory, fsync, rename, fsync dir."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_directory(directory)


def save_detector(directory: Path, detector: Detector, fitted_at: float | None,
                  identity: dict[str, Any]) -> None:
    """Store the detector as the new current version and drop older versions."""
    directory.mkdir(parents=True, exist_ok=True)
    version = f"v-{time.time_ns()}"
    version_directory = directory / version
    version_directory.mkdir()
    detector.save(version_directory)
    meta = {"format": FORMAT_VERSION, "fitted_at": fitted_at, "identity": identity}
    (version_directory / _META_FILE).write_text(json.dumps(meta))
    _fsync_tree(version_directory)
    _fsync_directory(directory)
    write_atomically(directory / _POINTER_FILE, version)
    for stale in directory.glob("v-*"):
        if stale.name != version:
            shutil.rmtree(stale, ignore_errors=True)


def load_detector(directory: Path, detector: Detector,
                  identity: dict[str, Any]) -> StoredDetector | None:
    """Restore the stored state into `detector` (a fresh one built from the configuration) if
    it exists and was made for this identity; else None (logged), and detector is unchanged."""
    pointer = directory / _POINTER_FILE
    if not pointer.exists():
        return None
    try:
        version_directory = directory / pointer.read_text().strip()
        meta = json.loads((version_directory / _META_FILE).read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"state format {meta.get('format')} is not {FORMAT_VERSION}")
        if meta.get("identity") != identity:
            raise ValueError("stored for a different configuration "
                             f"({meta.get('identity')} != {identity})")
        detector.load(version_directory)
        fitted_at = meta.get("fitted_at")
        return StoredDetector(None if fitted_at is None else float(fitted_at), meta)
    except Exception as error:  # a corrupt state of any kind must only cost a rebuild
        log.warning("ignoring state in %s, it will be rebuilt from history: %s", directory,
                    error)
        return None
