"""Headless Chromium (Debian package `chromium`) taking a screenshot of a page, with the flags
from shared/NOTES.md (no sandbox as root, no network side traffic, a throwaway profile)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tests.support.services import require_binary


def screenshot(url: str, png_path: Path, width: int = 1200, height: int = 800,
               timeout_seconds: float = 120) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [require_binary("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-quic", f"--user-data-dir={profile}",
             "--hide-scrollbars", f"--window-size={width},{height}",
             f"--screenshot={png_path}", url],
            capture_output=True, text=True, timeout=timeout_seconds, check=False)
    if result.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return png_path


def ink_share(png_path: Path) -> tuple[float, int]:
    """(share of pixels that are not near-white, number of distinct colours): a blank or
    error page has almost no ink and few colours."""
    from matplotlib.image import imread

    pixels = imread(png_path)[..., :3]
    share = float(np.mean(np.any(pixels < 0.94, axis=-1)))
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    return share, colours
