"""Atomic file writes: what the package writes appears whole or not at all, never half written."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``target`` and rename it into place.

    The temporary name keeps ``target``'s suffix, since writers such as pandas pick formats by it; a failed write
    leaves the old ``target`` (if any) untouched and no temporary behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f'.tmp-{os.getpid()}-{target.name}')
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
