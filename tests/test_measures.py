"""Every measure against values computed by hand on small runs, and the fast path against ir_measures."""
from __future__ import annotations

import re

import ir_measures
import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
from ir_measures import AP, RR, P, R, Success, nDCG

from pyterrier_hybrid import RankDistance
from pyterrier_hybrid.evaluation.fast import evaluate_scores, supports
from pyterrier_hybrid.evaluation.measures import parse_measure

QRELS = pd.DataFrame([
    # q1: two relevant documents; q2: three, one never retrieved; q3: judged, nothing relevant;
    # q4: one relevant; q5: two relevant, absent from the run.
    ('q1', 'a', 1), ('q1', 'c', 1), ('q1', 'x', 0),
    ('q2', 'a', 1), ('q2', 'b', 1), ('q2', 'z', 1),
    ('q3', 'a', 0),
    ('q4', 'b', 1),
    ('q5', 'a', 1), ('q5', 'b', 1),
], columns=['query_id', 'doc_id', 'relevance'])

RUN = pd.DataFrame([
    ('q1', 'b', 0.9), ('q1', 'a', 0.8), ('q1', 'd', 0.7), ('q1', 'c', 0.6), ('q1', 'e', 0.5),
    ('q2', 'a', 0.9), ('q2', 'c', 0.5), ('q2', 'b', 0.1),
    ('q3', 'a', 0.9), ('q3', 'b', 0.8),
    ('q4', 'a', 0.9), ('q4', 'b', 0.8),
], columns=['query_id', 'doc_id', 'score'])


def per_query(measure, qrels=QRELS, run=RUN) -> dict[str, float]:
    return {m.query_id: m.value for m in ir_measures.iter_calc([measure], qrels, run)}


def test_rank_distance_by_hand():
    assert per_query(RankDistance) == {
        'q1': 4 - 2,   # relevant at ranks 2 and 4
        'q2': 4 - 1,   # ranks 1 and 3, and z (not retrieved) just past the end: 3 + 1
        'q3': 0.0,     # nothing relevant
        'q4': 0.0,     # a single relevant document has no spread
        'q5': 0.0,     # q5 is missing from the run: ir_measures gives it the default
    }
    # the aggregate averages over every judged query, the missing one included as 0
    assert RankDistance.calc_aggregate(QRELS, RUN) == pytest.approx((2 + 3 + 0 + 0 + 0) / 5)


def test_rank_distance_skips_queries_without_qrels_as_ir_measures_does():
    run = pd.concat([RUN, pd.DataFrame([('q9', 'a', 1.0), ('q9', 'b', 0.5)], columns=RUN.columns)])
    assert 'q9' not in per_query(RankDistance, run=run) and 'q9' not in per_query(AP, run=run)
    assert RankDistance.calc_aggregate(QRELS, run) == RankDistance.calc_aggregate(QRELS, RUN)


def test_rank_distance_cutoff_treats_the_cut_documents_as_past_the_end():
    assert per_query(RankDistance @ 3)['q1'] == (3 + 1) - 2  # c at rank 4 is cut: counted at rank 4
    assert per_query(RankDistance @ 1)['q1'] == (1 + 1) - (1 + 1)  # neither retrieved


def test_rank_distance_breaks_ties_as_trec_eval():
    # trec_eval orders equal scores by doc_id descending: c (rank 1), b, a (rank 3)
    run = pd.DataFrame([('q1', 'a', 1.0), ('q1', 'b', 1.0), ('q1', 'c', 1.0)], columns=RUN.columns)
    qrels = QRELS[QRELS['query_id'] == 'q1']
    assert per_query(RankDistance, qrels, run) == {'q1': 3 - 1}
    # and that is the order AP sees: relevant c at 1 and a at 3 -> (1/1 + 2/3) / 2
    assert per_query(AP, qrels, run)['q1'] == pytest.approx((1 + 2 / 3) / 2)


def test_standard_measures_by_hand():
    ap = per_query(AP)
    assert ap['q1'] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert ap['q2'] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert ap['q4'] == pytest.approx(1 / 2)
    ndcg = per_query(nDCG @ 10)
    assert ndcg['q1'] == pytest.approx((1 / 1.5849625 + 1 / 2.3219281) / (1 + 1 / 1.5849625))
    recall = per_query(R @ 100)
    assert recall['q2'] == pytest.approx(2 / 3) and recall['q1'] == 1.0


def test_usable_next_to_ir_measures_in_pt_experiment():
    run = RUN.rename(columns={'query_id': 'qid', 'doc_id': 'docno'})
    topics = pd.DataFrame({'qid': ['q1', 'q2', 'q3', 'q4', 'q5'], 'query': ['x'] * 5})
    qrels = QRELS.rename(columns={'query_id': 'qid', 'doc_id': 'docno', 'relevance': 'label'})
    system = pt.Transformer.from_df(run, uniform=True)
    result = pt.Experiment([system], topics, qrels, eval_metrics=[nDCG @ 10, AP, RankDistance, RankDistance @ 3],
                           names=['run'])
    assert set(result.columns) == {'name', 'nDCG@10', 'AP', 'RankDistance', 'RankDistance@3'}
    assert result.loc[0, 'RankDistance'] == pytest.approx(1.0)
    assert result.loc[0, 'RankDistance@3'] == pytest.approx((2 + 3 + 0 + 0 + 0) / 5)  # q2: b at 3, z past 3
    assert result.loc[0, 'AP'] == pytest.approx((0.5 + (1 + 2 / 3) / 3 + 0 + 0.5 + 0) / 5)


def test_rank_distance_parses_like_any_ir_measures_measure():
    assert ir_measures.parse_measure('RankDistance') == RankDistance
    assert ir_measures.parse_measure('RankDistance@100') == RankDistance @ 100
    assert parse_measure('RankDistance@100') == RankDistance @ 100 and parse_measure('nDCG@10') == nDCG @ 10
    with pytest.raises(ValueError, match="unknown measure 'RankDistanse'.*RankDistance@100"):
        parse_measure('RankDistanse')
    with pytest.raises(ValueError, match="unknown measure 'R'"):  # R needs a cutoff
        parse_measure('R')


# Everything the fast path claims.
FAST = [AP, AP @ 5, AP @ 10, nDCG, nDCG @ 3, nDCG @ 10, R @ 5, R @ 50, P @ 1, P @ 5, P @ 50, RR,
        RankDistance, RankDistance @ 5, RankDistance @ 100]


def random_judged_scores(seed: int = 0, queries: int = 200, docs: int = 40):
    """Scores with many exact ties, docnos not in column order, grades 0-3 (and -1), queries without relevant
    documents or without qrels, and relevant documents the run does not hold."""
    rng = np.random.default_rng(seed)
    docnos = rng.permutation([f'd{i:02d}' for i in range(docs)] + ['D7', 'e', 'E1'])
    scores = rng.integers(0, 6, size=(queries, len(docnos))) / 4
    qids = [f'q{i}' for i in range(queries)]
    rows = []
    for i, qid in enumerate(qids):
        if i % 10 == 9:
            continue  # no qrels: not evaluated
        judged = rng.choice(np.r_[docnos, ['missing-1', 'missing-2', 'missing-3']], size=rng.integers(1, 12),
                            replace=False)
        grades = [0] * len(judged) if i % 10 == 8 else rng.choice([-1, 0, 1, 1, 2, 3], size=len(judged))
        rows += [(qid, doc, int(g)) for doc, g in zip(judged, grades)]
    qrels = pd.DataFrame(rows, columns=['qid', 'docno', 'label'])
    return scores, docnos, qids, qrels


def test_fast_path_equals_ir_measures_on_every_query_with_ties():
    scores, docnos, qids, qrels = random_judged_scores()
    fast = evaluate_scores(scores, docnos, qids, qrels, FAST, query_batch=64)
    run = pd.DataFrame({'query_id': np.repeat(qids, len(docnos)), 'doc_id': np.tile(docnos, len(qids)),
                        'score': scores.ravel()})
    reference = pd.DataFrame([(m.query_id, str(m.measure), m.value) for m in ir_measures.iter_calc(
        FAST, qrels.rename(columns={'qid': 'query_id', 'docno': 'doc_id', 'label': 'relevance'}), run)],
        columns=['qid', 'measure', 'value'])
    merged = reference.merge(fast, on=['qid', 'measure'], how='outer', suffixes=('_ir_measures', '_fast'))
    assert len(merged) == len(fast) == 180 * len(FAST)
    disagree = merged[~np.isclose(merged['value_fast'], merged['value_ir_measures'], rtol=0, atol=1e-9)]
    assert disagree.empty, disagree
    assert (merged['value_fast'] > 0).mean() > 0.5  # mostly informative values, not zeros agreeing


REFUSED = [nDCG(gains={0: 0, 1: 1, 2: 5, 3: 10}) @ 10, nDCG(judged_only=True) @ 10, nDCG(dcg='exp-log2'),
           AP(rel=2), AP(judged_only=True) @ 10, R(rel=2) @ 10, P(judged_only=True) @ 5, RR(rel=2),
           RR @ 10,  # ir_measures' RR@k is MS MARCO's: ties by docno ascending
           Success @ 10, ir_measures.define_byquery(lambda qrels, run: 0.0, name='AP')]


@pytest.mark.parametrize('measure', REFUSED, ids=str)
def test_fast_path_refuses_what_it_would_not_compute_exactly(measure):
    assert supports(AP(rel=1)) and supports(nDCG(dcg='log2', judged_only=False) @ 10)  # defaults, spelled out
    assert not supports(measure)
    scores, docnos, qids, qrels = random_judged_scores(queries=5)
    with pytest.raises(ValueError, match=re.escape(f'cannot compute {measure} exactly')):
        evaluate_scores(scores, docnos, qids, qrels, [AP, measure])
