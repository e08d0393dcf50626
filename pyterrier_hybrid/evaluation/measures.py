"""Evaluation measures: the ir_measures standards and the language-bias measure of arXiv 2408.10536.

``RankDistance`` is an ir_measures measure, so it sits next to ``nDCG@10`` and ``AP`` in
``pt.Experiment(eval_metrics=[...])`` and works on its own via ``RankDistance.calc_aggregate(qrels, run)``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ir_measures
import pandas as pd
from ir_measures import AP, R, nDCG

#: The measures of the papers: nDCG@10, AP over the full ranking (their mAP), and recall at 100.
DEFAULT_MEASURES = (nDCG @ 10, AP, R @ 100)


def _rank_distance(qrels: pd.DataFrame, run: pd.DataFrame) -> Iterator[tuple[str, float]]:
    """RD(q) = max rank - min rank of q's relevant documents.

    Ties are ordered as trec_eval orders them (score descending, then doc_id descending), so the ranks are the
    ones AP is computed on. A relevant document missing from the run counts as ranked just past its end, so a
    truncated run gives a lower bound rather than a flattering 0. A query with fewer than two relevant
    documents has RD = 0.
    """
    relevant = qrels.loc[qrels['relevance'] > 0, ['query_id', 'doc_id']]
    run = run.sort_values(['query_id', 'score', 'doc_id'], ascending=[True, False, False])
    run = run.assign(rank=run.groupby('query_id').cumcount() + 1)
    per_query = pd.DataFrame({
        'length': run.groupby('query_id').size(),
        'relevant': relevant.groupby('query_id').size(),
    }).dropna(subset=['length'])
    hits = run.merge(relevant, on=['query_id', 'doc_id']).groupby('query_id')['rank'].agg(['min', 'max', 'size'])
    per_query = per_query.join(hits).fillna({'relevant': 0, 'size': 0})
    missing = per_query['size'] < per_query['relevant']  # relevant documents the run did not retrieve
    past_end = per_query['length'] + 1
    high = per_query['max'].where(~missing, past_end)
    low = per_query['min'].fillna(past_end)
    distance = (high - low).where(per_query['relevant'] >= 2, 0.0)
    for qid, value in distance.items():
        yield qid, float(value)


RankDistance = ir_measures.define(
    _rank_distance,
    name='RankDistance',
    pretty_name='Rank distance',
    short_desc='max rank - min rank of the relevant documents (language bias; lower is better)',
)


def parse_measure(name: Any):
    """An ir_measures measure or RankDistance from its name (``AP``, ``nDCG@10``, ``RankDistance``)."""
    if not isinstance(name, str):
        raise ValueError(f'expected a measure name, got {name!r}')
    if name == 'RankDistance':
        return RankDistance
    try:
        return ir_measures.parse_measure(name)
    except (ValueError, NameError, SyntaxError, TypeError) as error:
        raise ValueError(f'unknown measure {name!r}; e.g. AP, nDCG@10, R@100, RR@10, RankDistance') from error
