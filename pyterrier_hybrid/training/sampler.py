"""The hybrid batch sampler of arXiv 2408.10536, as a sentence-transformers batch sampler.

Each batch is, with probability ``alpha``, **monolingual**: every query and passage in one language, the language
drawn uniformly per batch; otherwise **cross-lingual**: every query and its passage in two different languages.
``alpha=1`` is the X-X-mono baseline, ``alpha=0`` the X-Y baseline.

Decisions the paper leaves open, made here:

* In a cross-lingual batch each item gets its own (query language, passage language) pair, drawn uniformly from
  the ordered pairs of distinct languages the item exists in.
* A batch holds at most one version of an item, so translations never serve as each other's false negatives.
* No two rows of a batch have the same positive text, and no row's positive is another row's hard negative: in
  XQuAD-R 656 of the 1190 English questions share their answer sentence with another question, and every other
  sentence of a paragraph is a hard negative of its questions, so either would train a correct answer as a
  negative. A row that conflicts with the batch is deferred to a later batch (as in sentence-transformers'
  ``NoDuplicatesBatchSampler``), so it is still used about as often as the others.
* With several data sets, each batch comes from one of them, drawn in proportion to its number of items (the
  paper's "sampled based on dataset size"); within a data set, items are drawn without replacement and the pool
  is reshuffled when it runs out, so every item is used about equally often.
* An epoch is ``number of items // batch_size`` batches; the sequence of batches depends only on the seed and
  the epoch, so every DDP rank computes the same sequence and the trainer hands each rank its own share.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from sentence_transformers.base.sampler import DefaultBatchSampler

from .rows import TrainingRows


class _Texts(NamedTuple):
    """Each row's positive and negative as text ids (equal texts, equal ids; -1: no negative)."""
    positive: list[int]
    negative: list[int]

    @classmethod
    def of(cls, rows: TrainingRows) -> _Texts:
        ids = {}
        positive = [ids.setdefault(t, len(ids)) for t in rows.positive]
        if rows.negative is None:
            return cls(positive, [-1] * len(positive))
        return cls(positive, [ids.setdefault(t, len(ids)) for t in rows.negative])


class _Batch:
    """A batch being filled: which items and texts it holds, to refuse a row that would be a false negative."""

    def __init__(self, texts: _Texts):
        self.texts, self.rows, self.groups, self.positives, self.negatives = texts, [], set(), set(), set()

    def conflicts(self, row: int, group: int) -> bool:
        positive, negative = self.texts.positive[row], self.texts.negative[row]
        return (group in self.groups or positive in self.positives or positive in self.negatives
                or negative in self.positives)

    def add(self, row: int, group: int) -> None:
        self.rows.append(row)
        self.groups.add(group)
        self.positives.add(self.texts.positive[row])
        self.negatives.add(self.texts.negative[row])


class _Pool:
    """Row choices for a set of items, drawn without replacement and reshuffled when exhausted; an item whose row
    conflicts with the batch waits at the front of the queue for the next batch."""

    def __init__(self, rows_by_item: dict[int, list[int]], texts: _Texts):
        self.items = np.fromiter(rows_by_item, dtype=np.int64)
        self.rows, self.texts = rows_by_item, texts
        self.queue: list[int] = []

    def draw(self, size: int, rng: np.random.Generator) -> list[int]:
        batch, deferred, position, refills = _Batch(self.texts), [], 0, 0
        while len(batch.rows) < size:
            if position == len(self.queue):
                if refills == 2:  # every item was tried against this batch
                    raise ValueError(f'cannot fill a batch of {size} rows from {len(self.items)} items without two '
                                     "equal positives or a positive that is another row's negative; lower "
                                     'batch_size or deduplicate the training data')
                self.queue = deferred + rng.permutation(self.items).tolist()
                position, refills = len(deferred), refills + 1
                deferred = []
                continue
            item = self.queue[position]
            position += 1
            choices = self.rows[item]
            row = choices[int(rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
            if batch.conflicts(row, item):
                deferred.append(item)
            else:
                batch.add(row, item)
        self.queue = deferred + self.queue[position:]
        return batch.rows


class HybridBatchSampler(DefaultBatchSampler):
    """Monolingual batches with probability ``alpha``, cross-lingual otherwise; see the module docstring.

    Pass it to the trainer as ``functools.partial(HybridBatchSampler, rows=rows, alpha=0.5)``; the trainer
    supplies ``dataset``, ``batch_size``, ``drop_last``, ``generator`` and ``seed``.

    Raises:
        ValueError: before training, for ``alpha`` outside [0, 1], no rows, mono batches without any language
            that has ``batch_size`` items with distinct positives, or cross batches without ``batch_size`` items
            in two languages; while iterating, for a pool whose conflicts leave no way to fill a batch.
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool = True, valid_label_columns=None, generator=None,
                 seed: int = 0, *, rows: TrainingRows, alpha: float = 0.5):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'alpha must lie in [0, 1] (1 = X-X-mono, 0 = X-Y), not {alpha}')
        if len(rows) == 0:
            raise ValueError('no training rows')
        self.rows, self.alpha = rows, alpha
        self.sources = list(dict.fromkeys(rows.source.tolist()))
        self.texts = _Texts.of(rows)
        self.structure = {source: self._pools(source) for source in self.sources}
        self._check_feasible()

    def _pools(self, source: str) -> tuple[dict[str, dict[int, list[int]]], dict[int, list[int]]]:
        """Per usable language, item -> its monolingual row; and item -> its cross-lingual rows."""
        mono, cross = {}, {}
        rows = self.rows
        for i in np.flatnonzero(rows.source == source):
            group = int(rows.group[i])
            if rows.query_lang[i] == rows.passage_lang[i]:
                mono.setdefault(str(rows.query_lang[i]), {})[group] = [int(i)]
            else:
                cross.setdefault(group, []).append(int(i))
        usable = {lang: items for lang, items in mono.items()
                  if len({self.texts.positive[r] for (r,) in items.values()}) >= self.batch_size}
        return usable, cross

    def _check_feasible(self) -> None:
        for source, (mono, cross) in self.structure.items():
            if self.alpha > 0 and not mono:
                raise ValueError(f'monolingual batches (alpha={self.alpha}) need a language with at least '
                                 f'{self.batch_size} items in {source!r} (with distinct positives); none has')
            if self.alpha < 1 and len(cross) < self.batch_size:
                raise ValueError(f'cross-lingual batches (alpha={self.alpha}) need {self.batch_size} items in at '
                                 f'least two languages in {source!r}, found {len(cross)}; with one language use '
                                 'alpha=1')

    def __len__(self) -> int:
        return len(np.unique(self.rows.group)) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        pools = {source: ({lang: _Pool(items, self.texts) for lang, items in mono.items()},
                          _Pool(cross, self.texts) if cross else None)
                 for source, (mono, cross) in self.structure.items()}
        sizes = np.array([len(np.unique(self.rows.group[self.rows.source == s])) for s in self.sources], float)
        for _ in range(len(self)):
            mono, cross = pools[self.sources[rng.choice(len(self.sources), p=sizes / sizes.sum())]]
            monolingual = cross is None or (mono and rng.random() < self.alpha)
            if monolingual:
                languages = sorted(mono)
                yield mono[languages[rng.integers(len(languages))]].draw(self.batch_size, rng)
            else:
                yield cross.draw(self.batch_size, rng)
