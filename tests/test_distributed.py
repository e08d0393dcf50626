"""Encoding under torchrun: two gloo processes on the CPU build the indexes one process builds (the index
command's, and a pooled encoding's documents and queries)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyterrier as pt
import pytest

import pyterrier_hybrid as ph

pytestmark = pytest.mark.slow  # see pyproject.toml

DATASET = 'lareqa/xquad-r/th/th'  # real Thai: 1190 questions, 852 candidate sentences


def torchrun(*args, port: int) -> subprocess.CompletedProcess:
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an installed one
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '',
           'PYTHONPATH': os.pathsep.join([root, *filter(None, [os.environ.get('PYTHONPATH')])])}
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                           '--master_port', str(port), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=600)


def assert_same_index(built: ph.DenseIndex, single: ph.DenseIndex) -> None:
    docnos, vectors, meta = built.payload()
    single_docnos, single_vectors, single_meta = single.payload()
    assert list(docnos) == list(single_docnos)
    np.testing.assert_allclose(vectors, single_vectors, rtol=0, atol=1e-6)
    assert meta == single_meta
    assert not [p.name for p in built.index_path.parent.iterdir() if '.rank-' in p.name], 'shares left behind'


def test_torchrun_encoding_equals_the_single_process_one(tiny_model, tiny_encoder, tmp_path, lareqa_dir):
    worker = Path(__file__).with_name('distributed_worker.py')
    done = torchrun(worker, tiny_model, DATASET, tmp_path / 'two', port=29541)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('852 documents') == 1, done.stdout  # rank 0 reports the merged index, once
    single = ph.DenseIndex(tmp_path / 'one')
    (tiny_encoder >> single.indexer()).index(pt.get_dataset(f'irds:{DATASET}').get_corpus_iter(verbose=False))
    assert len(single) == 852
    assert_same_index(ph.DenseIndex(tmp_path / 'two' / 'index'), single)
    ph.PooledDenseRetrieval(tiny_encoder, DATASET, tmp_path / 'one-pooled')
    for name in ('docs.index', 'queries.index'):
        assert_same_index(ph.DenseIndex(tmp_path / 'two' / 'pooled' / name),
                          ph.DenseIndex(tmp_path / 'one-pooled' / name))
