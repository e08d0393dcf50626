"""Settings, evaluate_settings and the Mo / Cr / Mul table, on real LAReQA data and a MIRACL-shaped fixture."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import ir_datasets
import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
from ir_measures import AP, RR, P, R, nDCG

from pyterrier_hybrid import (
    RankDistance,
    Setting,
    evaluate_settings,
    lareqa_settings,
    macro_average,
    macro_average_perquery,
    miracl_languages,
    miracl_settings,
    paired_tests,
)
from pyterrier_hybrid.evaluation.settings import PruneAfterLastRelevant, _prune_depth


def test_lareqa_settings_cover_the_papers_grid():
    settings = lareqa_settings('xquad-r')
    kinds = pd.Series([s.kind for s in settings]).value_counts().to_dict()
    assert kinds == {'Mo': 11, 'Cr': 110, 'Mul': 11}
    assert Setting('lareqa/xquad-r/th/en', 'Cr', 'th', 'en') in settings
    assert Setting('lareqa/mlqa-r/de', 'Mul', 'de', 'all') in lareqa_settings('mlqa-r', kinds=['Mul'])
    assert len(lareqa_settings('mlqa-r', kinds=['Cr'])) == 42
    with pytest.raises(KeyError, match="unknown 'el' for lareqa/mlqa-r; valid: ar, de, en, es, hi, vi, zh"):
        lareqa_settings('mlqa-r', langs=['de', 'el'])
    with pytest.raises(KeyError, match='valid: Mo, Cr, Mul'):
        lareqa_settings('xquad-r', kinds=['Mono'])


def _oracle_run(setting: Setting) -> pd.DataFrame:
    """A setting's relevant documents first, in qrels order, then one non-relevant document."""
    qrels = pt.get_dataset(f'irds:{setting.dataset_id}').get_qrels()
    run = qrels.assign(score=-qrels.groupby('qid').cumcount().astype(float))[['qid', 'docno', 'score']]
    filler = run.drop_duplicates('qid').assign(docno='nonrelevant', score=-100.0)
    return pd.concat([run, filler])


def _oracle(setting: Setting) -> pt.Transformer:
    return pt.Transformer.from_df(_oracle_run(setting), uniform=True)


def _worst(setting: Setting) -> pt.Transformer:
    """The non-relevant document first and the relevant ones after it."""
    run = _oracle_run(setting)
    run['score'] = run['score'] - 200.0 * (run['docno'] != 'nonrelevant')
    return pt.Transformer.from_df(run, uniform=True)


def test_evaluate_settings_and_macro_average_on_real_data(lareqa_dir):
    settings = lareqa_settings('xquad-r', langs=['de', 'en'])
    results = evaluate_settings({'oracle': _oracle, 'worst': _worst}, settings,
                                eval_metrics=[nDCG @ 10, AP, RankDistance])
    assert len(results) == 2 * len(settings) == 12
    assert {'dataset_id', 'kind', 'query_lang', 'doc_lang'} <= set(results.columns)
    oracle = results[results['name'] == 'oracle'].set_index('dataset_id')
    assert (oracle['AP'] == 1.0).all()
    assert oracle.loc['lareqa/xquad-r/de', 'RankDistance'] == 10.0  # 11 relevant at ranks 1..11
    assert oracle.loc['lareqa/xquad-r/de/en', 'RankDistance'] == 0.0

    table = macro_average(results, measures=[AP, RankDistance])
    assert list(table.columns) == [('AP', 'Mo'), ('AP', 'Cr'), ('AP', 'Mul'),
                                   ('RankDistance', 'Mo'), ('RankDistance', 'Cr'), ('RankDistance', 'Mul')]
    assert table.loc['oracle', ('AP', 'Mul')] == 1.0
    assert table.loc['worst', ('AP', 'Mo')] == pytest.approx(0.5)  # the one relevant sentence at rank 2
    # Mul for 'worst': relevant at ranks 2..12 -> AP = mean(k / (k + 1)) over k = 1..11
    assert table.loc['worst', ('AP', 'Mul')] == pytest.approx(sum(k / (k + 1) for k in range(1, 12)) / 11)


def test_macro_average_is_a_mean_over_settings_of_each_kind():
    results = pd.DataFrame({
        'name': ['m'] * 5, 'kind': ['Mo', 'Mo', 'Cr', 'Cr', 'Mul'],
        'AP': [0.8, 0.6, 0.5, 0.3, 0.2], 'AP p-value': [0.01] * 5,
    })
    table = macro_average(results)
    assert table.loc['m'].to_dict() == {('AP', 'Mo'): pytest.approx(0.7), ('AP', 'Cr'): pytest.approx(0.4),
                                        ('AP', 'Mul'): pytest.approx(0.2)}
    with pytest.raises(KeyError, match='kind'):
        macro_average(results.drop(columns='kind'))


def _miracl_fixture(home: Path, langs: dict[str, list[tuple[str, str, list[str]]]]) -> None:
    """Lay out files where ir_datasets keeps its own MIRACL downloads (paths from its downloads.json)."""
    downloads = json.loads((Path(ir_datasets.__file__).parent / 'etc' / 'downloads.json').read_text())['miracl']
    for lang, queries in langs.items():
        def path(key):
            target = home / 'miracl' / downloads[f'v1.0/{lang}/{key}']['cache_path']
            target.parent.mkdir(parents=True, exist_ok=True)
            return target
        docs = [{'docid': f'{lang}{i}#0', 'title': f'title {i}', 'text': f'{lang} passage {i}'} for i in range(4)]
        with gzip.open(path('corpus/0'), 'wt') as f:
            f.writelines(json.dumps(d) + '\n' for d in docs)
        path('dev/topics').write_text(''.join(f'{qid}\t{text}\n' for qid, text, _ in queries))
        path('dev/qrels').write_text(''.join(f'{qid}\tQ0\t{lang}{d}#0\t1\n' for qid, _, rel in queries for d in rel))


def test_miracl_languages_in_one_call(tmp_path):
    """Runs in a fresh interpreter: ir_datasets fixes its home directory at import."""
    _miracl_fixture(tmp_path, {
        'sw': [('1', 'swali moja', ['0']), ('2', 'swali mbili', ['3', '1'])],
        'yo': [('7', 'ibeere kan', ['2'])],
    })
    script = textwrap.dedent('''
        import pandas as pd, pyterrier as pt
        from ir_measures import AP
        import pyterrier_hybrid as ph
        def by_docno(setting):  # scores documents by their number: docs 0..3 ranked 3, 2, 1, 0
            corpus = pd.DataFrame(pt.get_dataset('irds:' + setting.dataset_id).get_corpus_iter(verbose=False))
            docs = corpus.assign(score=corpus['docno'].str.extract(r'(\\d)')[0].astype(float))
            topics = pt.get_dataset('irds:' + setting.dataset_id).get_topics('text')
            run = topics[['qid']].merge(docs[['docno', 'score']], how='cross')
            return pt.Transformer.from_df(run, uniform=True)
        results = ph.evaluate_settings({'by_docno': by_docno}, ph.miracl_settings(['sw', 'yo']), [AP])
        print(results[['dataset_id', 'AP']].to_json(orient='records'))
    ''')
    env = {'IR_DATASETS_HOME': str(tmp_path), 'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)}
    done = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r['dataset_id']: r['AP'] for r in json.loads(done.stdout.strip().splitlines()[-1])}
    # sw: q1's doc 0 is ranked 4th (AP 1/4); q2's docs 3 and 1 are 1st and 3rd (AP (1 + 2/3) / 2). yo: doc 2 is 2nd.
    assert rows == {'miracl/sw/dev': pytest.approx((1 / 4 + (1 + 2 / 3) / 2) / 2), 'miracl/yo/dev': 0.5}


def test_miracl_settings_validate_languages():
    assert {'sw', 'yo', 'de'} <= set(miracl_languages('dev')) and 'yo' not in miracl_languages('train')
    assert miracl_settings(['yo'])[0] == Setting('miracl/yo/dev', 'Mo', 'yo', 'yo')
    with pytest.raises(KeyError, match="unknown 'xx' for miracl/\\*/dev; valid: ar, bn, de"):
        miracl_settings(['xx'])


def _random_full_ranking(setting: Setting) -> pt.Transformer:
    """Every document for every query, with seeded random scores (and some ties)."""
    dataset = pt.get_dataset(f'irds:{setting.dataset_id}')
    docnos = [d['docno'] for d in dataset.get_corpus_iter(verbose=False)]
    topics = dataset.get_topics('text')
    rng = np.random.default_rng(0)
    run = pd.DataFrame({'qid': np.repeat(topics['qid'].to_numpy(), len(docnos)),
                        'docno': np.tile(docnos, len(topics)),
                        'score': rng.integers(0, 5000, len(topics) * len(docnos)).astype(float)})
    return pt.Transformer.from_df(run, uniform=True)


def test_pruning_after_the_last_relevant_document_changes_no_value(lareqa_dir):
    settings = lareqa_settings('xquad-r', kinds=['Cr'], langs=['de', 'th'])[:1]
    measures = [nDCG @ 10, AP, R @ 100, RankDistance, RankDistance @ 50]
    pruned = evaluate_settings({'random': _random_full_ranking}, settings, measures, perquery=True)
    full = evaluate_settings({'random': _random_full_ranking}, settings, measures, perquery=True, prune=False)
    merged = pruned.merge(full, on=['qid', 'measure'], suffixes=('_pruned', '_full'))
    assert len(merged) == 1190 * len(measures)
    np.testing.assert_allclose(merged['value_pruned'], merged['value_full'], rtol=1e-9)
    assert _prune_depth([AP, nDCG @ 10, R @ 100]) == 100
    assert _prune_depth([AP, P]) is None  # precision over the whole run counts every document


def test_no_pruning_for_rr_at_k_whose_evaluator_breaks_ties_by_docno_ascending():
    # 'a' (relevant) ties with 11 documents whose docnos sort before it: trec_eval ranks it first, so pruning
    # after depth 10 drops A..B; MS MARCO's RR@10 (ir_measures' only RR@k) ranks ties by docno ascending
    run = pd.DataFrame({'qid': 'q1', 'docno': ['a', *'ABCDEFGHIJK'], 'score': 1.0})
    qrels = pd.DataFrame({'qid': ['q1'], 'docno': ['a'], 'label': [1]})
    topics = pd.DataFrame({'qid': ['q1'], 'query': ['x']})
    system = pt.Transformer.from_df(run, uniform=True)
    pruned = pt.Experiment([system, system >> PruneAfterLastRelevant(qrels, 10)], topics, qrels, [RR @ 10, RR])
    assert list(pruned['RR@10']) == [0.0, 0.1]  # pruning would change it: 'a' is 12th of 12, or 10th of 10
    assert list(pruned['RR']) == [1.0, 1.0]  # trec_eval's RR ranks 'a' first either way
    assert _prune_depth([RR @ 10]) is None and _prune_depth([RR, AP]) == 1


def test_paired_tests_pool_queries_of_a_kind_and_correct():
    rng = np.random.default_rng(0)
    rows = []
    for dataset_id, kind in [('s/de/de', 'Mo'), ('s/en/en', 'Mo'), ('s/de/en', 'Cr')]:
        base = rng.random(200)
        for name, values in [('base', base), ('better', base + 0.05 + rng.normal(0, 0.01, 200)),
                             ('same', base + rng.normal(0, 0.01, 200))]:
            rows += [{'name': name, 'dataset_id': dataset_id, 'kind': kind, 'query_lang': 'x', 'doc_lang': 'y',
                      'qid': f'q{i}', 'measure': 'AP', 'value': v} for i, v in enumerate(values)]
    perquery = pd.DataFrame(rows)
    tests = paired_tests(perquery, baseline='base', measure='AP').set_index(['kind', 'name'])
    assert tests.loc[('Mo', 'better'), 'pairs'] == 400 and tests.loc[('Cr', 'better'), 'pairs'] == 200
    assert tests.loc[('Mo', 'better'), 'significant'] and tests.loc[('Cr', 'better'), 'significant']
    assert tests.loc[('Mo', 'better'), 'delta'] == pytest.approx(0.05, abs=0.005)
    assert not tests.loc[('Mo', 'same'), 'significant']
    assert (tests['p_corrected'] >= tests['p']).all()
    table = macro_average_perquery(perquery)
    assert table.loc['better', ('AP', 'Mo')] == pytest.approx(table.loc['base', ('AP', 'Mo')] + 0.05, abs=0.005)
    with pytest.raises(KeyError, match="baseline 'untrained' is not among"):
        paired_tests(perquery, baseline='untrained', measure='AP')


def _language_grid(queries: int = 40) -> pd.DataFrame:
    """XQuAD-R-shaped per-query nDCG@10 on de, en, zh (Mo, Cr, Mul): 'base' (pretrained, no seed) and 'tuned' (seeds
    1-3), which gains 0.1 exactly where the documents are German and is otherwise the baseline plus seed noise."""
    rng = np.random.default_rng(0)
    langs = ['de', 'en', 'zh']
    rows = []
    for query_lang in langs:
        for doc_lang in [*langs, 'all']:
            kind = 'Mul' if doc_lang == 'all' else 'Mo' if doc_lang == query_lang else 'Cr'
            dataset_id = f'lareqa/xquad-r/{query_lang}' + ('' if kind == 'Mul' else f'/{doc_lang}')
            base = rng.uniform(0.2, 0.8, queries)
            runs = [('base', None, base)] + [('tuned', seed, base + 0.1 * (doc_lang == 'de') +
                                              rng.normal(0, 0.02, queries)) for seed in (1, 2, 3)]
            rows += [pd.DataFrame({'name': name, 'seed': seed, 'dataset_id': dataset_id, 'kind': kind,
                                   'query_lang': query_lang, 'doc_lang': doc_lang, 'measure': 'nDCG@10',
                                   'qid': [f'q{i}' for i in range(queries)], 'value': values})
                     for name, seed, values in runs]
    return pd.concat(rows, ignore_index=True)


def test_pair_tests_find_the_language_pairs_that_differ():
    from scipy.stats import ttest_rel
    from statsmodels.stats.multitest import multipletests

    from pyterrier_hybrid.evaluation.statistics import pair_tests
    perquery = _language_grid()
    tests = pair_tests(perquery, baseline='base', measure='nDCG@10', correction='holm')
    assert len(tests) == 12 and set(tests['name']) == {'tuned'}
    assert (tests['pairs'] == 40).all(), 'seeds are averaged per query, not counted as queries'
    significant = set(tests.loc[tests['significant'], ['query_lang', 'doc_lang']].itertuples(index=False, name=None))
    assert significant == {('de', 'de'), ('en', 'de'), ('zh', 'de')}
    assert list(tests.loc[tests['significant'], 'delta']) == pytest.approx([0.1] * 3, abs=0.01)
    # the same numbers as scipy on the seed-averaged scores of one pair, and Holm over the model's 12 pairs
    one = perquery[perquery['dataset_id'] == 'lareqa/xquad-r/en/de']
    means = one.groupby(['name', 'qid'])['value'].mean().unstack('name')
    row = tests.set_index('dataset_id').loc['lareqa/xquad-r/en/de']
    assert row['p'] == pytest.approx(ttest_rel(means['tuned'], means['base']).pvalue, rel=1e-9)
    assert row['mean'] == pytest.approx(means['tuned'].mean()) and row['baseline_mean'] == pytest.approx(
        means['base'].mean())
    np.testing.assert_allclose(tests['p_corrected'], multipletests(tests['p'], method='holm')[1])
    uncorrected = pair_tests(perquery, baseline='base', measure='nDCG@10', correction='none')
    np.testing.assert_array_equal(uncorrected['p_corrected'], uncorrected['p'])


def test_paired_tests_average_seeds_per_query():
    perquery = _language_grid()
    tests = paired_tests(perquery, baseline='base', measure='nDCG@10').set_index('kind')
    assert tests.loc['Cr', 'pairs'] == 6 * 40 and tests.loc['Mo', 'pairs'] == 3 * 40, 'one pair per query'
    averaged = perquery.groupby(['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'qid', 'measure'],
                                as_index=False)['value'].mean()
    pd.testing.assert_frame_equal(paired_tests(averaged, baseline='base', measure='nDCG@10').set_index('kind'),
                                  tests, check_like=True)


def test_seed_summary_is_the_spread_of_each_seeds_macro_average():
    from pyterrier_hybrid.evaluation.statistics import seed_summary
    perquery = _language_grid()
    summary = seed_summary(perquery).set_index(['name', 'kind'])
    assert list(summary.index) == [(n, k) for n in ('base', 'tuned') for k in ('Mo', 'Cr', 'Mul')]
    tuned = perquery[(perquery['name'] == 'tuned') & (perquery['kind'] == 'Cr')]
    per_seed = tuned.groupby(['seed', 'dataset_id'])['value'].mean().groupby('seed').mean()
    assert summary.loc[('tuned', 'Cr'), 'mean'] == pytest.approx(per_seed.mean())
    assert summary.loc[('tuned', 'Cr'), 'std'] == pytest.approx(per_seed.std(ddof=1))
    assert summary.loc[('tuned', 'Cr'), 'seeds'] == 3 and summary.loc[('base', 'Cr'), 'seeds'] == 1
    assert np.isnan(summary.loc[('base', 'Cr'), 'std']), 'one seed has no spread'
    without_seeds = seed_summary(perquery.drop(columns='seed')).set_index(['name', 'kind'])
    assert (without_seeds['seeds'] == 1).all()
    assert without_seeds.loc[('tuned', 'Cr'), 'mean'] == pytest.approx(per_seed.mean())
