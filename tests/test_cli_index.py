"""The index, merge and retrieve commands on missing, corrupt and mismatched indexes: one line, exit 2."""
from __future__ import annotations

import pytest
from conftest import build_tiny_model
from test_cli import cli
from test_index import random_corpus

from pyterrier_hybrid import DenseIndex

pytestmark = pytest.mark.slow  # see pyproject.toml


DATASET = 'lareqa/xquad-r/th/th'


def assert_user_error(done, *messages: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'Traceback' not in done.stderr, done.stderr[-2000:]
    error = done.stderr.strip().splitlines()[-1]  # after any progress bars of the model loading
    assert error.startswith('pyterrier-hybrid ') and all(message in error for message in messages), done.stderr


@pytest.fixture
def corrupt(tmp_path):
    index = DenseIndex(tmp_path / 'corrupt').indexer().index(random_corpus(n=20, dim=32))
    (index.index_path / 'vecs.f4').write_bytes(b'\0' * 12)
    return index.index_path


def test_missing_and_corrupt_indexes_are_user_errors(tiny_model, tmp_path, corrupt, lareqa_dir):
    run = tmp_path / 'run.res'
    assert_user_error(cli('retrieve', tiny_model, tmp_path / 'none', DATASET, '--output', run),
                      f'no index at {tmp_path / "none"}')
    assert_user_error(cli('retrieve', tiny_model, corrupt, DATASET, '--output', run), 'vecs.f4 is truncated')
    assert_user_error(cli('merge', corrupt, tmp_path / 'none', '--output', tmp_path / 'm'), 'vecs.f4 is truncated')
    assert_user_error(cli('merge', tmp_path / 'none', '--output', tmp_path / 'm'), 'no index at')
    done = cli('retrieve', tiny_model, corrupt, DATASET, '--output', run, '--num-results', '0')
    assert done.returncode == 2 and "--num-results: expected a positive integer, not '0'" in done.stderr
    assert not run.exists() and not (tmp_path / 'm').exists()


def test_index_overwrite_replaces_a_corrupt_index(tiny_model, corrupt, lareqa_dir):
    assert_user_error(cli('index', tiny_model, DATASET, corrupt), 'already exists', '--overwrite')
    done = cli('index', tiny_model, DATASET, corrupt, '--overwrite')
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(DenseIndex(corrupt)) == 852


def test_retrieve_refuses_another_model_unless_allowed(tiny_model, tiny_encoder, tmp_path, lareqa_dir):
    other = build_tiny_model(tmp_path / 'other-model')
    (tiny_encoder >> DenseIndex(tmp_path / 'th')).index([{'docno': f'd{i}', 'text': f'document {i}'} for i in range(9)])
    run = tmp_path / 'run.res'
    assert_user_error(cli('retrieve', other, tmp_path / 'th', DATASET, '--output', run),
                      f"built by '{tiny_model}', not by the query encoder '{other}'", '--allow-other-encoder')
    done = cli('retrieve', other, tmp_path / 'th', DATASET, '--output', run, '--num-results', '5',
               '--allow-other-encoder')
    assert done.returncode == 0 and '1190 queries, 5950 results' in done.stdout, done.stderr[-2000:]
