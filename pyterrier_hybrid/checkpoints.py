"""What a checkpoint is, by content: the one identity that experiment caches, backend exports and the bias gate's
verdicts are keyed by, so none of them outlives the weights it was made from."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pyterrier_hybrid.retrieval import BACKENDS

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's contents, remembered per (path, size, mtime): a checkpoint's weights take about a
    second to hash, and keys are asked for often."""
    path = Path(path).resolve()
    stat = path.stat()
    remembered = (str(path), stat.st_size, stat.st_mtime_ns)
    if remembered not in _FILE_DIGESTS:
        with open(path, 'rb') as file:
            _FILE_DIGESTS[remembered] = hashlib.file_digest(file, 'sha256').hexdigest()
    return _FILE_DIGESTS[remembered]


def checkpoint_digest(name_or_path: str | os.PathLike) -> str:
    """A local checkpoint by the contents of its files (config, weights, tokenizer; not hidden files,
    documentation, or the folders the backends write into it: ``onnx/``, ``openvino/``, ``torch/``), so pointing a
    model at another checkpoint is a new model and encoding with another backend is not. A Hub id by name and the
    commit its cached snapshot of ``main`` resolves to (the revision the encoder and the trainer load; ``main``
    itself when nothing is cached yet), so a model updated upstream is a new model too."""
    path = Path(name_or_path)
    if not path.is_dir():
        return digest({'hub': str(name_or_path), 'revision': hub_commit(str(name_or_path))})
    files = sorted(p for p in path.rglob('*') if p.is_file() and p.suffix != '.md'
                   and not any(part.startswith('.') for part in p.relative_to(path).parts)
                   and p.relative_to(path).parts[0] not in BACKENDS)
    return digest({p.relative_to(path).as_posix(): file_digest(p) for p in files})


def hub_commit(repo_id: str) -> str:
    """The commit of the Hub cache's snapshot of ``repo_id`` at ``main`` (no network), or ``'main'`` (nothing
    cached, or a name that is no Hub id, such as a missing local path: whoever loads it says so)."""
    from huggingface_hub import try_to_load_from_cache
    try:
        cached = try_to_load_from_cache(repo_id, 'config.json')
    except ValueError:  # huggingface_hub's HFValidationError: not a repo id
        return 'main'
    return Path(cached).parent.name if isinstance(cached, str) else 'main'


def digest(value: Any) -> str:
    """The sha256 of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
