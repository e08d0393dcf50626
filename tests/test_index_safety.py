"""DenseIndex builds that race, crash or are killed: one build wins, nothing is lost, leftovers are settled.

Processes are forked (multiprocessing 'fork'): the children inherit the imported package and start at once."""
from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from test_index import random_corpus

from pyterrier_hybrid import DenseIndex

FORK = multiprocessing.get_context('fork')


def _build(path: Path, dim: int, started, release, errors) -> None:
    """Build a ``dim``-dimensional index at ``path``, pausing after the first document until ``release``."""
    def corpus():
        for i, doc in enumerate(random_corpus(n=50, dim=dim)):
            if i == 1:
                started.set()
                release.wait(120)
            yield doc
    try:
        DenseIndex(path).indexer().index(corpus())
    except Exception as error:
        errors.put(f'{type(error).__name__}: {error}')
        raise SystemExit(1) from None


def test_a_second_build_into_the_same_path_fails_instead_of_replacing_the_first(tmp_path):
    path = tmp_path / 'idx'
    first_started, first_release, second_started, second_release = (FORK.Event() for _ in range(4))
    errors = FORK.Queue()
    second_release.set()
    first = FORK.Process(target=_build, args=(path, 32, first_started, first_release, errors))
    first.start()
    assert first_started.wait(120), 'the first build did not start'
    second = FORK.Process(target=_build, args=(path, 48, second_started, second_release, errors))
    second.start()  # while the first is still encoding
    second.join(120)
    first_release.set()
    first.join(120)
    assert second.exitcode == 1, 'the second build into the same path succeeded'
    assert errors.get(timeout=10).startswith(f'FileExistsError: {path} is being built by another process (pid ')
    assert first.exitcode == 0
    assert DenseIndex(path).metadata['vec_size'] == 32 and len(DenseIndex(path)) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ['idx']


def _fail_the_swap(monkeypatch, path: Path, *, times: int) -> None:
    """The first ``times`` renames into ``path`` fail: the second rename of an overwrite (new index -> path), as
    after a crash between the two, and then as many attempts to put an index back."""
    real, failures = os.replace, []

    def replace(src, dst):
        if Path(dst) == path and len(failures) < times:
            failures.append(src)
            raise OSError('simulated crash between the renames')
        real(src, dst)
    monkeypatch.setattr(os, 'replace', replace)


@pytest.fixture
def old_index(tmp_path) -> DenseIndex:
    return DenseIndex(tmp_path / 'idx').indexer().index(random_corpus(n=500))


def test_an_overwrite_that_fails_between_its_renames_puts_the_old_index_back(old_index, monkeypatch, tmp_path):
    _fail_the_swap(monkeypatch, old_index.index_path, times=1)
    with pytest.raises(OSError, match='simulated crash'):
        old_index.indexer(mode='overwrite').index(random_corpus(n=10))
    assert len(DenseIndex(old_index.index_path)) == 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ['idx']


def test_an_overwrite_stuck_between_its_renames_is_completed_by_the_next_open(old_index, monkeypatch, tmp_path):
    _fail_the_swap(monkeypatch, old_index.index_path, times=10)  # putting the old one back fails as well
    with pytest.raises(OSError, match='simulated crash'):
        old_index.indexer(mode='overwrite').index(random_corpus(n=10))
    assert not old_index.index_path.exists()
    building, = tmp_path.glob('.idx.building-*')
    assert sorted(p.name for p in building.iterdir()) == ['index', 'old'], 'both copies are kept'
    monkeypatch.undo()
    assert DenseIndex(old_index.index_path).built() and len(DenseIndex(old_index.index_path)) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ['idx']


def _overwrite_and_die_between_the_renames(path: Path) -> None:
    real = os.replace

    def replace(src, dst):
        if Path(dst) == path and Path(src).name == 'index':
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
    os.replace = replace
    DenseIndex(path).indexer(mode='overwrite').index(random_corpus(n=10))


def test_an_overwrite_killed_between_its_renames_is_completed_by_the_next_open(old_index, tmp_path):
    killed = FORK.Process(target=_overwrite_and_die_between_the_renames, args=(old_index.index_path,))
    killed.start()
    killed.join(120)
    assert killed.exitcode == -signal.SIGKILL
    assert not old_index.index_path.exists()
    reopened = DenseIndex(old_index.index_path)
    assert len(reopened) == 10 and len(reopened.retriever(num_results=3)(_queries())) == 3 * 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ['idx']


def test_the_next_build_settles_what_killed_builds_left(old_index, tmp_path):
    """A build holds the lock for its whole run and the kernel drops it when the process dies, so whoever holds it
    knows every .idx.building-* directory is a dead build's: half-encoded ones go, a half-done swap is completed."""
    for name in ('abc123', 'x_9'):
        (tmp_path / f'.idx.building-{name}' / 'index').mkdir(parents=True)
        (tmp_path / f'.idx.building-{name}' / 'index' / 'vecs.f4').write_bytes(b'\0' * 64)
    (tmp_path / '.idx.lock').write_text('999999')  # left by a kill -9
    other = tmp_path / '.idx.b.building-abc'  # another index's ('idx.b'): not ours to touch
    other.mkdir()
    DenseIndex(old_index.index_path).indexer(mode='overwrite').index(random_corpus(n=20))
    assert len(DenseIndex(old_index.index_path)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.idx.b.building-abc', 'idx']


def _queries():
    from test_index import queries
    return queries()
