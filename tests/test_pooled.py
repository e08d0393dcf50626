"""One pooled encoding serving every setting, and the fast evaluator against pt.Experiment."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ir_measures import AP, R, nDCG

import pyterrier_hybrid as ph


@pytest.fixture(scope='module')
def pooled(tiny_encoder, tmp_path_factory, lareqa_dir):
    """The Thai questions and the pooled 11-language corpus: enough for a Mo, a Cr and a Mul setting."""
    return ph.PooledDenseRetrieval(tiny_encoder, 'lareqa/xquad-r/th', tmp_path_factory.mktemp('pooled'))


def test_encodes_once_and_restricts_each_setting(pooled, tiny_encoder, monkeypatch):
    assert len(pooled.docs) == 13014 and len(pooled.queries) == 1190
    calls = []
    monkeypatch.setattr(type(tiny_encoder), 'encode', lambda *a, **k: calls.append(a) or None)
    again = ph.PooledDenseRetrieval(tiny_encoder, 'lareqa/xquad-r/th', pooled.docs.index_path.parent)
    setting = ph.Setting('lareqa/xquad-r/th/de', 'Cr', 'th', 'de')
    topics = pd.DataFrame({'qid': ['th-56beb4343aeaaa14008c925b'], 'query': ['ignored: vectors are cached']})
    run = again(setting)(topics)
    assert calls == [], 'a second construction re-encoded'
    assert len(run) == 1276 and run['docno'].str.startswith('de-').all()  # the whole German corpus, ranked


def test_fast_evaluation_equals_pt_experiment(pooled):
    settings = [s for s in ph.lareqa_settings('xquad-r', langs=['de', 'th']) if s.query_lang == 'th']
    measures = [AP, nDCG @ 10, R @ 100, ph.RankDistance]
    slow = ph.evaluate_settings({'tiny': pooled}, settings, measures, perquery=True)
    fast = ph.evaluate_pooled({'tiny': pooled}, settings, measures)
    merged = slow.merge(fast, on=['name', 'dataset_id', 'qid', 'measure'], suffixes=('_slow', '_fast'))
    assert len(merged) == len(slow) == len(fast) == 3 * 1190 * 4
    for measure, group in merged.groupby('measure'):
        # FAISS and numpy round float32 dot products differently, which can swap near-tied documents
        # (a random tiny model puts many documents within float rounding of each other; real models rarely do)
        exact = np.isclose(group['value_fast'], group['value_slow'], atol=1e-9)
        assert exact.mean() >= 0.9, f'{measure}: {exact.mean():.2%} of queries identical'
        difference = abs(group['value_fast'].mean() - group['value_slow'].mean())
        assert difference <= 2e-3 * max(1, group['value_slow'].mean()), f'{measure}: means differ by {difference}'
    with pytest.raises(ValueError, match='no fast path'):
        ph.evaluate_pooled({'tiny': pooled}, settings[:1], [ph.RankDistance @ 10])
