"""Encoding under torchrun: each rank encodes its round-robin share of a corpus, rank 0 merges the shares.

``torchrun --nproc_per_node N -m pyterrier_hybrid index MODEL DATASET INDEX``, and a
:class:`~pyterrier_hybrid.PooledDenseRetrieval` built with ``distributed=True`` on every rank of a script started
by torchrun (its documents and its queries), build their indexes with :func:`build_index`. Outside torchrun, with
one process, or without ``distributed``, that is the plain ``(encoder >> index.indexer()).index(docs)``. Under it,
rank r encodes records r, r + N, ... (:func:`shard_corpus`) into a hidden sibling of the index, on its own GPU when
the encoder was loaded with ``device=local_device()``, and rank 0 merges the non-empty shares in order
(:meth:`DenseIndex.merge`) into exactly the index one process builds; every rank returns once it is in place. A
failure on any rank is raised on every rank, so none waits for one that died, and the shares are removed either way.

The ranks coordinate over a gloo group of their own with a long timeout (rank 0's merge of a large corpus takes
longer than NCCL's default 10 minutes), created once and kept: a process group is not re-created after it was
destroyed, which NCCL does not survive. Schedulers without torchrun use the same pieces by hand: ``index --shard
I/N`` on each machine, then ``merge``.
"""
from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyterrier as pt

from .index import DenseIndex, shard_corpus

#: how long a rank waits for the others (rank 0's merge of tens of millions of vectors included)
COORDINATION_TIMEOUT = datetime.timedelta(hours=12)
_GROUP: list = []  # the gloo group the ranks coordinate on, created once per process


def world() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun sets them: (0, 1) outside torchrun."""
    return int(os.environ.get('RANK', '0')), int(os.environ.get('WORLD_SIZE', '1'))


def local_device() -> str | None:
    """This rank's GPU under torchrun (``cuda:LOCAL_RANK``) when there are GPUs; None (the encoder's default)
    otherwise. Load the encoder with it, or every rank encodes on the first GPU."""
    if world()[1] == 1:
        return None
    import torch
    return f'cuda:{os.environ.get("LOCAL_RANK", "0")}' if torch.cuda.is_available() else None


def build_index(index: DenseIndex, encode: pt.Transformer, records: Callable[[], Iterable[dict]],
                encoder_metadata: dict, *, mode: str = 'create', batch_size: int = 4096,
                distributed: bool = False) -> DenseIndex:
    """Encode ``records()`` with ``encode`` (a transformer giving ``docno`` and ``doc_vec``) into ``index``; with
    ``distributed``, split over the torchrun processes (every rank must call it).

    Args:
        index: the index to build.
        encode: e.g. the encoder itself for documents; queries go through ``encoder.query_encoder()`` and a rename.
        records: returns a fresh iterator over the records (each rank reads it and keeps its share).
        encoder_metadata: what the index records about the encoder (``HybridEncoder.index_metadata()``).
        mode: ``'create'`` or ``'overwrite'``, as :meth:`DenseIndex.indexer`.
        batch_size: records per encoding call.
        distributed: split the encoding over the ranks of a torchrun job (no effect with one process).
    """
    rank, size = world()
    if not distributed or size == 1:
        _encode_into(index, encode, records(), encoder_metadata, mode, batch_size)
        return index
    if mode == 'create' and index.built():
        raise FileExistsError(f'{index.index_path} already exists; use mode="overwrite" to replace it')
    shares = [_share_path(index.index_path, r, size) for r in range(size)]

    def encode_share() -> bool:
        share = iter(shard_corpus(records(), rank, size))
        first = next(share, None)
        if first is not None:  # a corpus smaller than the world leaves the last ranks without records
            _encode_into(DenseIndex(shares[rank]), encode, _chain(first, share), encoder_metadata, 'overwrite',
                         batch_size)
        return first is not None

    try:
        built = _on_every_rank(encode_share)
        if not any(built):
            raise ValueError(f'no documents to index into {index.index_path}')
        _on_every_rank(lambda: DenseIndex.merge([s for s, b in zip(shares, built) if b], index.index_path,
                                                mode=mode) if rank == 0 else None)
    finally:
        shutil.rmtree(shares[rank], ignore_errors=True)
    index._forget_files()  # the merged files replace whatever this object had opened
    return index


def _encode_into(index: DenseIndex, encode: pt.Transformer, records: Iterable[dict], encoder_metadata: dict,
                 mode: str, batch_size: int) -> None:
    (encode >> index.indexer(mode=mode, encoder_metadata=encoder_metadata)).index(records, batch_size=batch_size)


def _chain(first: dict, rest: Iterable[dict]) -> Iterable[dict]:
    yield first
    yield from rest


def _share_path(path: Path, rank: int, size: int) -> Path:
    """Where rank ``rank`` writes its share: a hidden sibling of the index, named by rank and world size."""
    return path.parent / f'.{path.name}.rank-{rank}-of-{size}'


def _group():
    """The gloo group the ranks coordinate on: the default group's ranks, created once (and the default group
    too, when torchrun started the processes but nobody initialised it)."""
    import torch.distributed as dist
    if not _GROUP:
        if not dist.is_initialized():
            dist.init_process_group('gloo', timeout=COORDINATION_TIMEOUT)
            _GROUP.append(dist.group.WORLD)
        else:
            _GROUP.append(dist.new_group(backend='gloo', timeout=COORDINATION_TIMEOUT))
    return _GROUP[0]


def _on_every_rank(step: Callable[[], Any]) -> list:
    """Run ``step`` on this rank, raise on every rank what failed on any of them, else return every rank's result."""
    import torch.distributed as dist
    group = _group()
    failure, outcome = None, None
    try:
        outcome = (True, step())
    except Exception as error:  # re-raised below, after the other ranks have heard of it
        failure, outcome = error, (False, f'{type(error).__name__}: {error}')
    outcomes = [None] * dist.get_world_size(group)
    dist.all_gather_object(outcomes, outcome, group=group)
    if failure is not None:
        raise failure
    failed = [(rank, text) for rank, (ok, text) in enumerate(outcomes) if not ok]
    if failed:
        rank, text = failed[0]
        raise RuntimeError(f'rank {rank} of {len(outcomes)} failed: {text}')
    return [result for _, result in outcomes]
