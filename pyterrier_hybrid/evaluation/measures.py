"""Evaluation measures: the ir_measures standards and the language-bias measure of arXiv 2408.10536.

``RankDistance`` is registered with ir_measures like its own measures, so ``RankDistance`` and
``RankDistance@100`` parse (``ir_measures.parse_measure``, YAML, the CLI), sit next to ``nDCG@10`` and ``AP`` in
``pt.Experiment(eval_metrics=[...])``, and work on their own via ``RankDistance.calc_aggregate(qrels, run)``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ir_measures
import pandas as pd
from ir_measures import AP, Metric, R, measures, nDCG

from .ties import docno_keys, trec_order

#: The measures of the papers: nDCG@10, AP over the full ranking (their mAP), and recall at 100.
DEFAULT_MEASURES = (nDCG @ 10, AP, R @ 100)


class _RankDistance(measures.Measure):
    """RD(q) = max rank - min rank of q's relevant documents (arXiv 2408.10536; language bias, lower is better).

    Ranks follow trec_eval's order (:mod:`pyterrier_hybrid.evaluation.ties`), so they are the ones AP is computed
    on. ``RankDistance@k`` cuts the run to its top k first. A relevant document missing from the (cut) run counts
    as ranked just past its end, so a truncated run gives a lower bound rather than a flattering 0. A query with
    fewer than two relevant documents has RD = 0.
    """
    __name__ = 'RankDistance'
    NAME = __name__
    PRETTY_NAME = 'Rank distance'
    SHORT_DESC = 'max rank - min rank of the relevant documents (language bias; lower is better)'
    SUPPORTED_PARAMS = {
        'cutoff': measures.ParamInfo(dtype=int, required=False, desc='ranking cutoff threshold'),
    }
    RUN_INPUTS = ['query_id', 'doc_id', 'score']
    QREL_INPUTS = ['query_id', 'doc_id', 'relevance']

    def runtime_impl(self, qrels: pd.DataFrame, run: pd.DataFrame) -> Iterator[Metric]:
        """Per-query values for ir_measures' RuntimeProvider (first in its DefaultPipeline, so in pt.Experiment)."""
        relevant = qrels.loc[qrels['relevance'] > 0, ['query_id', 'doc_id']]
        query_codes, _ = pd.factorize(run['query_id'])
        run = run.iloc[trec_order(run['score'].to_numpy(), docno_keys(run['doc_id']), groups=query_codes)]
        run = run.assign(rank=run.groupby('query_id', sort=False).cumcount() + 1)
        if self.params.get('cutoff') is not None:
            run = run[run['rank'] <= self.params['cutoff']]
        per_query = pd.DataFrame({
            'length': run.groupby('query_id').size(),
            'relevant': relevant.groupby('query_id').size(),
        }).dropna(subset=['length'])
        per_query = per_query[per_query.index.isin(qrels['query_id'])]  # unjudged queries: skipped, as ir_measures
        hits = run.merge(relevant, on=['query_id', 'doc_id']).groupby('query_id')['rank'].agg(['min', 'max', 'size'])
        per_query = per_query.join(hits).fillna({'relevant': 0, 'size': 0})
        missing = per_query['size'] < per_query['relevant']  # relevant documents the (cut) run does not hold
        past_end = per_query['length'] + 1
        high = per_query['max'].where(~missing, past_end)
        low = per_query['min'].fillna(past_end)
        distance = (high - low).where(per_query['relevant'] >= 2, 0.0)
        for qid, value in distance.items():
            yield Metric(qid, self, float(value))


RankDistance = _RankDistance()
if RankDistance.NAME not in measures.registry:  # a re-imported module must not register twice
    measures.register(RankDistance)


def mul_only(measure: Any) -> bool:
    """Whether a measure (object or name) is only meaningful in Mul: rank distance needs relevant documents in
    several languages, so in Mo and Cr it is 0 by construction and belongs in no table, mean or test there."""
    return str(measure).startswith(RankDistance.NAME)


def parse_measure(name: Any) -> measures.Measure:
    """An ir_measures measure from its name (``AP``, ``nDCG@10``, ``RankDistance@100``), with a helpful error."""
    if not isinstance(name, str):
        raise ValueError(f'expected a measure name, got {name!r}')
    try:
        measure = ir_measures.parse_measure(name)
        measure.validate_params()
        cutoff = measure.params.get('cutoff')
        if cutoff is not None and cutoff < 1:  # ir_measures accepts @0, which ranks nothing: a silent 0 (or NaN)
            raise ValueError('a cutoff is a positive integer')
        return measure
    except (ValueError, NameError, SyntaxError, TypeError, AssertionError) as error:
        raise ValueError(f'unknown measure {name!r} ({error}); e.g. AP, AP@100, nDCG@10, R@100, P@10, RR@10, '
                         f'RankDistance, RankDistance@100') from error
