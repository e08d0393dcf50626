"""Mined cross-lingual hard negatives: the same-language distractors the base model ranks above a translation.

On a pooled corpus (Mul) a multilingual encoder ranks sentences in the query's own language above the answer in
another language: that is the language bias rank distance measures. Mining turns those errors into training
signal. Before training, the base model ranks each language's training passages (every item's positive and hard
negatives) for each query; a cross-lingual row (query in X, answer in Y) then gets as its hard negative one of the
X-language passages that outrank its Y-language answer, drawn under the recipe's seed. Texts that are the item's
own answer in any language are never negatives (in XQuAD-R several questions share one answer sentence).
Monolingual rows, and cross-lingual rows whose answer already outranks every distractor, keep the negative
:func:`~pyterrier_hybrid.training.rows.build_rows` gave them.

The base model's vectors are cached (:mod:`~pyterrier_hybrid.training.base_vectors`), so every seed reuses them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from pyterrier_hybrid.data.items import ParallelItem

from .base_vectors import Encode, cached_vectors
from .rows import TrainingRows

log = logging.getLogger('pyterrier_hybrid')


def mine_negatives(rows: TrainingRows, sources: Mapping[str, Iterable[ParallelItem]], encode: Encode, *,
                   seed: int, cache: Path | None = None, model_id: str = '') -> TrainingRows:
    """``rows`` with each cross-lingual row's negative replaced by a mined one where the base model ranks a
    same-language distractor above the row's answer; see the module docstring.

    ``encode`` gives unit vectors; ``model_id`` names the encoder in the cache key
    (:func:`~pyterrier_hybrid.training.base_vectors.model_identity`); ``cache`` is the folder of cached vectors
    (None: no cache).

    Raises:
        ValueError: before any encoding, when the data has no hard negatives to replace, no cross-lingual rows
            to mine for (one language), or a query language without passages.
    """
    if rows.negative is None:
        raise ValueError('mined negatives replace the hard negatives of cross-lingual rows, and the training data '
                         "has none (no item lists negatives); use negative_language='passage'")
    cross = np.flatnonzero(rows.query_lang != rows.passage_lang)
    if not len(cross):
        raise ValueError('mined negatives are same-language distractors of cross-lingual rows, and the training '
                         f'data has none (languages: {", ".join(sorted(set(rows.query_lang.tolist())))}); use '
                         "negative_language='passage'")
    corpus: dict[str, list[str]] = {}
    for items in sources.values():
        for item in items:
            corpus.setdefault(item.lang, []).extend([item.positive, *item.negatives])
    corpus = {lang: sorted(set(texts)) for lang, texts in corpus.items()}
    missing = sorted(set(rows.query_lang[cross].tolist()) - {lang for lang, texts in corpus.items() if texts})
    if missing:
        raise ValueError(f'no passages to mine negatives from in {", ".join(missing)}')
    queries = sorted(set(rows.anchor[i] for i in cross))
    passages = sorted({t for texts in corpus.values() for t in texts} | {rows.positive[i] for i in cross})
    query_vecs = cached_vectors(queries, 'query', encode, cache, model_id)
    passage_vecs = cached_vectors(passages, 'passage', encode, cache, model_id)
    query_at = {t: i for i, t in enumerate(queries)}
    passage_at = {t: i for i, t in enumerate(passages)}
    own_answers: dict[int, set[str]] = {}
    for i in range(len(rows)):
        own_answers.setdefault(int(rows.group[i]), set()).add(rows.positive[i])

    rng = np.random.default_rng(seed)
    negative = list(rows.negative)
    mined = 0
    for lang, texts in corpus.items():
        at_lang = cross[rows.query_lang[cross] == lang]
        if not len(at_lang):
            continue
        lang_vecs = passage_vecs[[passage_at[t] for t in texts]]
        texts_array = np.asarray(texts, dtype=object)
        scores_of: dict[str, np.ndarray] = {}  # a question heads one row per answer language: rank it once
        for i in at_lang:  # a fixed order (languages as the data lists them, rows in order): seeded draws repeat
            query = query_vecs[query_at[rows.anchor[i]]]
            if rows.anchor[i] not in scores_of:
                scores_of[rows.anchor[i]] = lang_vecs @ query
            scores = scores_of[rows.anchor[i]]
            answer = passage_vecs[passage_at[rows.positive[i]]] @ query
            above = [t for t in texts_array[scores > answer] if t not in own_answers[int(rows.group[i])]]
            if above:
                negative[i] = above[rng.integers(len(above))]
                mined += 1
    log.info('mined negatives for %d of %d cross-lingual rows (the others: no same-language distractor outranks '
             'their answer)', mined, len(cross))
    return TrainingRows(**{**rows._asdict(), 'negative': negative})  # _replace trips on TrainingRows.__len__
