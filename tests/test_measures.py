"""Every measure against values computed by hand on small runs."""
from __future__ import annotations

import ir_measures
import pandas as pd
import pyterrier as pt
import pytest
from ir_measures import AP, R, nDCG

from pyterrier_hybrid import RankDistance

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
    result = pt.Experiment([system], topics, qrels, eval_metrics=[nDCG @ 10, AP, RankDistance], names=['run'])
    assert set(result.columns) == {'name', 'nDCG@10', 'AP', 'RankDistance'}
    assert result.loc[0, 'RankDistance'] == pytest.approx(1.0)
    assert result.loc[0, 'AP'] == pytest.approx((0.5 + (1 + 2 / 3) / 3 + 0 + 0.5 + 0) / 5)
