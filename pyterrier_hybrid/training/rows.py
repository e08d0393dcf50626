"""The rows a trainer sees: every (query language, passage language) version of every parallel item."""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from pyterrier_hybrid.data.items import ParallelItem
from pyterrier_hybrid.training.recipe import NEGATIVE_LANGUAGES


class TrainingRows(NamedTuple):
    """The trainer's rows (one per item and (query language, passage language)) and what the sampler needs.

    ``anchor[i]`` is item ``group[i]``'s query in ``query_lang[i]``; ``positive[i]`` and ``negative[i]`` are its
    passages in ``passage_lang[i]``; ``source[i]`` is the data set it came from.
    """
    anchor: list[str]
    positive: list[str]
    negative: list[str] | None
    group: np.ndarray
    query_lang: np.ndarray
    passage_lang: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.anchor)


def build_rows(sources: Mapping[str, Iterable[ParallelItem]], seed: int = 0,
               negative_language: str = 'passage') -> TrainingRows:
    """Every (query language, passage language) combination of every item, per named source.

    One hard negative per row is drawn (under ``seed``) from the passage's negatives. A trainer column cannot have
    holes, so a passage without negatives gets a random other item's positive in the same language instead (an
    easy negative); without any negatives at all there is no ``negative`` column.

    ``negative_language`` picks whose negatives a cross-lingual row gets: ``'passage'`` (those of the passage's
    version, as in a monolingual row) or ``'query'`` (those of the query's version: a sentence in the query's own
    language that must rank below the answer in another language, which is the language bias the Mul setting
    measures). ``'mined'`` builds the rows as ``'passage'`` does; :func:`~pyterrier_hybrid.training.mining.
    mine_negatives` then replaces the negatives of cross-lingual rows.
    """
    if negative_language not in NEGATIVE_LANGUAGES:
        raise ValueError(f'negative_language must be one of {", ".join(NEGATIVE_LANGUAGES)}, '
                         f'not {negative_language!r}')
    rng = np.random.default_rng(seed)
    columns = {k: [] for k in TrainingRows._fields}
    grouped = {}
    for source, items in sources.items():
        for item in items:
            if not item.query.strip() or not item.positive.strip():
                raise ValueError(f'item {item.id!r} ({item.lang}) of {source!r} has an empty query or positive')
            grouped.setdefault((source, item.id), {})[item.lang] = item
    if not grouped:
        raise ValueError('no training items')
    with_negatives = any(item.negatives for versions in grouped.values() for item in versions.values())
    positives_by_lang = {}
    for group, versions in enumerate(grouped.values()):
        for lang, item in versions.items():
            positives_by_lang.setdefault(lang, []).append((group, item.positive))
    for group, ((source, _), versions) in enumerate(grouped.items()):
        for q_lang, p_lang in itertools.product(sorted(versions), repeat=2):
            passage = versions[p_lang]
            columns['anchor'].append(versions[q_lang].query)
            columns['positive'].append(passage.positive)
            if with_negatives:
                contrast = versions[q_lang] if negative_language == 'query' else passage
                columns['negative'].append(_negative(contrast, group, positives_by_lang, rng))
            columns['group'].append(group)
            columns['query_lang'].append(q_lang)
            columns['passage_lang'].append(p_lang)
            columns['source'].append(source)
    return TrainingRows(
        anchor=columns['anchor'], positive=columns['positive'],
        negative=columns['negative'] if with_negatives else None,
        group=np.asarray(columns['group']), query_lang=np.asarray(columns['query_lang']),
        passage_lang=np.asarray(columns['passage_lang']), source=np.asarray(columns['source']))


def _negative(passage: ParallelItem, group: int, positives_by_lang: dict[str, list[tuple[int, str]]],
              rng: np.random.Generator) -> str:
    """A hard negative of the passage, or else another item's positive (in the same language where possible) whose
    text differs from the passage's: items that share an answer must not get it as their negative."""
    if passage.negatives:
        return passage.negatives[rng.integers(len(passage.negatives))]
    candidates = [p for p in positives_by_lang[passage.lang] if p[0] != group and p[1] != passage.positive]
    if not candidates:
        candidates = [p for positives in positives_by_lang.values() for p in positives
                      if p[0] != group and p[1] != passage.positive]
    if not candidates:
        raise ValueError('a single training item has no negatives to contrast with')
    return candidates[rng.integers(len(candidates))][1]
