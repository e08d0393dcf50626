"""The hybrid batch sampler of arXiv 2408.10536, as a sentence-transformers batch sampler.

Each batch is, with probability ``alpha``, **monolingual**: every query and passage in one language, the language
drawn uniformly per batch; otherwise **cross-lingual**: every query and its passage in two different languages.
``alpha=1`` is the X-X-mono baseline, ``alpha=0`` the X-Y baseline.

Decisions the paper leaves open, made here:

* In a cross-lingual batch each item gets its own (query language, passage language) pair, drawn uniformly from
  the ordered pairs of distinct languages the item exists in.
* A batch holds at most one version of an item, so translations never serve as each other's false negatives.
* With several data sets, each batch comes from one of them, drawn in proportion to its number of items (the
  paper's "sampled based on dataset size"); within a data set, items are drawn without replacement and the pool
  is reshuffled when it runs out, so every item is used about equally often.
* An epoch is ``number of items // batch_size`` batches; the sequence of batches depends only on the seed and
  the epoch, so every DDP rank computes the same sequence and the trainer hands each rank its own share.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sentence_transformers.base.sampler import DefaultBatchSampler

from .rows import TrainingRows


class _Pool:
    """Row choices for a set of items, drawn without replacement and reshuffled when exhausted."""

    def __init__(self, rows_by_item: dict[int, list[int]]):
        self.items = np.fromiter(rows_by_item, dtype=np.int64)
        self.rows = rows_by_item
        self.order, self.cursor = self.items, len(self.items)

    def draw(self, size: int, rng: np.random.Generator) -> list[int]:
        if self.cursor + size > len(self.order):
            self.order, self.cursor = rng.permutation(self.items), 0
        chosen = self.order[self.cursor:self.cursor + size]
        self.cursor += size
        return [int(rng.choice(self.rows[item])) for item in chosen]


class HybridBatchSampler(DefaultBatchSampler):
    """Monolingual batches with probability ``alpha``, cross-lingual otherwise; see the module docstring.

    Pass it to the trainer as ``functools.partial(HybridBatchSampler, rows=rows, alpha=0.5)``; the trainer
    supplies ``dataset``, ``batch_size``, ``drop_last``, ``generator`` and ``seed``.

    Raises:
        ValueError: before training, for ``alpha`` outside [0, 1], no rows, mono batches without any language
            that has ``batch_size`` items, or cross batches without ``batch_size`` items in two languages.
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
        self._check_feasible()

    def _pools(self, source: str) -> tuple[dict[str, dict[int, list[int]]], dict[int, list[int]]]:
        """Per language, item -> its monolingual row; and item -> its cross-lingual rows."""
        mono, cross = {}, {}
        rows = self.rows
        for i in np.flatnonzero(rows.source == source):
            group = int(rows.group[i])
            if rows.query_lang[i] == rows.passage_lang[i]:
                mono.setdefault(str(rows.query_lang[i]), {})[group] = [int(i)]
            else:
                cross.setdefault(group, []).append(int(i))
        usable = {lang: items for lang, items in mono.items() if len(items) >= self.batch_size}
        return usable, cross

    def _check_feasible(self) -> None:
        for source in self.sources:
            mono, cross = self._pools(source)
            if self.alpha > 0 and not mono:
                raise ValueError(f'monolingual batches (alpha={self.alpha}) need a language with at least '
                                 f'{self.batch_size} items in {source!r}; none has')
            if self.alpha < 1 and len(cross) < self.batch_size:
                raise ValueError(f'cross-lingual batches (alpha={self.alpha}) need {self.batch_size} items in at '
                                 f'least two languages in {source!r}, found {len(cross)}; with one language use '
                                 'alpha=1')

    def __len__(self) -> int:
        return len(np.unique(self.rows.group)) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        pools = {}
        for source in self.sources:
            mono, cross = self._pools(source)
            pools[source] = ({lang: _Pool(items) for lang, items in mono.items()}, _Pool(cross) if cross else None)
        sizes = np.array([len(np.unique(self.rows.group[self.rows.source == s])) for s in self.sources], float)
        for _ in range(len(self)):
            mono, cross = pools[self.sources[rng.choice(len(self.sources), p=sizes / sizes.sum())]]
            monolingual = cross is None or (mono and rng.random() < self.alpha)
            if monolingual:
                languages = sorted(mono)
                yield mono[languages[rng.integers(len(languages))]].draw(self.batch_size, rng)
            else:
                yield cross.draw(self.batch_size, rng)
