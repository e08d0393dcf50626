"""One pooled encoding serving every setting, and the fast evaluator against pt.Experiment."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
from ir_measures import AP, RR, P, R, nDCG

import pyterrier_hybrid as ph
from pyterrier_hybrid.evaluation import settings as settings_module
from pyterrier_hybrid.evaluation.fast import evaluate_perquery


@pytest.fixture(scope='module')
def pooled(tiny_model, tmp_path_factory, lareqa_dir):
    """The Thai questions and the pooled 11-language corpus: enough for a Mo, a Cr and a Mul setting."""
    encoder = ph.HybridEncoder.from_pretrained(tiny_model, batch_size=256)  # a tiny model: overhead per batch
    return ph.PooledDenseRetrieval(encoder, 'lareqa/xquad-r/th', tmp_path_factory.mktemp('pooled'))


@pytest.fixture
def every_eighth_question(monkeypatch):
    """Both evaluation paths see every 8th question of each setting (149 of 1,190): pt.Experiment over full
    rankings of the pooled corpus is minutes per setting with all of them."""
    get_dataset = pt.get_dataset

    class FewerTopics:
        def __init__(self, dataset):
            self.dataset = dataset

        def __getattr__(self, name):
            return getattr(self.dataset, name)

        def get_topics(self, *args, **kwargs):
            return self.dataset.get_topics(*args, **kwargs).iloc[::8]

    monkeypatch.setattr(pt, 'get_dataset', lambda *args, **kwargs: FewerTopics(get_dataset(*args, **kwargs)))


def test_encodes_once_and_restricts_each_setting(pooled, monkeypatch):
    assert len(pooled.docs) == 13014 and len(pooled.queries) == 1190
    calls = []
    monkeypatch.setattr(ph.HybridEncoder, 'encode', lambda *a, **k: calls.append(a) or None)
    again = ph.PooledDenseRetrieval(pooled.encoder, 'lareqa/xquad-r/th', pooled.docs.index_path.parent)
    setting = ph.Setting('lareqa/xquad-r/th/de', 'Cr', 'th', 'de')
    topics = pd.DataFrame({'qid': ['th-56beb4343aeaaa14008c925b'], 'query': ['ignored: vectors are cached']})
    run = again(setting)(topics)
    assert calls == [], 'a second construction re-encoded'
    assert len(run) == 1276 and run['docno'].str.startswith('de-').all()  # the whole German corpus, ranked


def test_fast_evaluation_equals_pt_experiment(pooled, every_eighth_question):
    """#17: both paths score with one function and rank ties as trec_eval does, so they agree on every query."""
    settings = [s for s in ph.lareqa_settings('xquad-r', langs=['de', 'th']) if s.query_lang == 'th']
    measures = [AP, AP @ 10, nDCG, nDCG @ 10, R @ 100, P @ 5, RR, ph.RankDistance, ph.RankDistance @ 10]
    slow = ph.evaluate_settings({'tiny': pooled}, settings, measures, perquery=True)
    fast = ph.evaluate_pooled({'tiny': pooled}, settings, measures)
    merged = slow.merge(fast, on=['name', 'dataset_id', 'qid', 'measure'], suffixes=('_slow', '_fast'))
    assert len(merged) == len(slow) == len(fast) == 3 * 149 * len(measures)
    differ = merged[~np.isclose(merged['value_fast'], merged['value_slow'], rtol=0, atol=1e-9)]
    assert differ.empty, f'{len(differ)} values differ: {differ.groupby("measure").size().to_dict()}'
    with pytest.raises(ValueError, match='cannot compute RR@10 exactly'):
        ph.evaluate_pooled({'tiny': pooled}, settings[:1], [AP, RR @ 10])


def test_measures_without_an_exact_fast_path_go_through_pt_experiment(pooled, every_eighth_question, monkeypatch):
    experiment_measures = []
    evaluate_settings = settings_module.evaluate_settings

    def recording(systems, settings, measures, **kwargs):
        experiment_measures.append(list(measures))
        return evaluate_settings(systems, settings, measures, **kwargs)

    monkeypatch.setattr(settings_module, 'evaluate_settings', recording)
    setting = [ph.Setting('lareqa/xquad-r/th/de', 'Cr', 'th', 'de')]
    refused = [nDCG(gains={0: 0, 1: 3}) @ 10, AP(rel=2), RR @ 10]
    values = evaluate_perquery({'tiny': pooled}, setting, [AP @ 10, *refused])
    assert experiment_measures == [refused]
    reference = evaluate_settings({'tiny': pooled}, setting, [AP @ 10, *refused], perquery=True)
    merged = reference.merge(values, on=['name', 'dataset_id', 'qid', 'measure'])
    assert len(merged) == len(values) == 149 * 4
    np.testing.assert_allclose(merged['value_x'], merged['value_y'], rtol=0, atol=1e-9)


def test_vectors_at_hand_evaluate_as_the_system_they_came_from(pooled):
    """PooledVectors: what evaluate_pooled reads of a pooled system, from vectors encoded elsewhere."""
    docnos, doc_vecs, _ = pooled.docs.payload()
    qids, query_vecs, _ = pooled.queries.payload()
    at_hand = ph.PooledVectors.of(docnos, np.asarray(doc_vecs), qids, np.asarray(query_vecs))
    settings = [s for s in ph.lareqa_settings('xquad-r', langs=['de', 'th']) if s.query_lang == 'th']
    measures = [AP, nDCG @ 10, ph.RankDistance]
    expected = ph.evaluate_pooled({'tiny': pooled}, settings, measures)
    pd.testing.assert_frame_equal(ph.evaluate_pooled({'tiny': at_hand}, settings, measures), expected)
    with pytest.raises(KeyError, match='1 id\\(s\\) have no vector'):
        at_hand.docs.vectors([docnos[0], 'no-such-doc'])
