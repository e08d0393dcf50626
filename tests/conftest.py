"""Shared fixtures: the real LAReQA files in ../shared, never a network fetch."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
LAREQA_DIR = Path(os.environ.get('PYTERRIER_HYBRID_LAREQA_DIR', SHARED / 'data' / 'lareqa'))
os.environ.setdefault('PYTERRIER_HYBRID_LAREQA_DIR', str(LAREQA_DIR))


@pytest.fixture(scope='session')
def lareqa_dir() -> Path:
    if not (LAREQA_DIR / 'xquad-r' / 'en.json').is_file():
        pytest.fail(f'the real LAReQA files are missing from {LAREQA_DIR} (see ../shared/README.md)')
    return LAREQA_DIR
