"""The benchmark scripts' shared helpers (benchmarks/lareqa_table.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pyterrier_hybrid import load_experiment

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'


@pytest.mark.parametrize(('switched', 'el'), [(True, 'lexicon, not training'), (False, 'neither')])
def test_settings_split_by_what_the_files_models_learnt_from(tmp_path, monkeypatch, switched, el):
    """A language only a lexicon brings in is its own group, and only in a file whose recipes switch into it."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from lareqa_table import coverage_of
    (tmp_path / 'en-el.txt').write_text('house\tσπίτι\n')
    switching = ', code_switching: {lexicons: [en-el.txt], keep_translations: true}' if switched else ''
    (tmp_path / 'study.yaml').write_text(f'''
name: study
models:
  base: {{pretrained: some/model}}
  trained: {{train: {{base: base, data: lareqa/mlqa-r{switching}}}}}
datasets: [lareqa/xquad-r]
''')
    coverage = coverage_of(load_experiment(tmp_path / 'study.yaml'))
    assert coverage('de', 'all') == coverage('zh', 'es') == 'seen in training'
    assert coverage('el', 'all') == coverage('de', 'el') == el
    assert coverage('th', 'all') == coverage('el', 'th') == 'neither'


def test_rank_distance_per_query_language_averages_seeds_not_queries(tmp_path, monkeypatch):
    """The chart's numbers: each seed's mean per query language, then the mean over seeds, models in the file's
    order; other measures and kinds left out."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import pandas as pd
    from train_strategies import rank_distance_by_query_language
    (tmp_path / 'study.yaml').write_text('''
name: study
models:
  untrained: {pretrained: some/model}
  trained: {train: {base: untrained, data: lareqa/mlqa-r}}
datasets: [lareqa/xquad-r]
measures: [AP, RankDistance]
''')
    rows = [('trained', 1, 'Mul', 'RankDistance', 'de', 100.0), ('trained', 1, 'Mul', 'RankDistance', 'de', 200.0),
            ('trained', 2, 'Mul', 'RankDistance', 'de', 400.0), ('trained', 1, 'Mul', 'RankDistance', 'en', 50.0),
            ('untrained', None, 'Mul', 'RankDistance', 'de', 900.0),
            ('trained', 1, 'Mul', 'AP', 'de', 0.5), ('trained', 1, 'Cr', 'RankDistance', 'de', 7.0)]
    perquery = pd.DataFrame(rows, columns=['name', 'seed', 'kind', 'measure', 'query_lang', 'value'])
    table = rank_distance_by_query_language(load_experiment(tmp_path / 'study.yaml'),
                                            perquery.assign(dataset_id='lareqa/xquad-r/all'))
    assert list(table.index) == ['untrained', 'trained'] and list(table.columns) == ['de', 'en']
    assert table.loc['trained', 'de'] == 275.0 and table.loc['untrained', 'de'] == 900.0
    assert table.loc['trained', 'en'] == 50.0 and pd.isna(table.loc['untrained', 'en'])
    # a study that does not measure rank distance has no such table (it used to crash after the whole study ran)
    (tmp_path / 'study.yaml').write_text((tmp_path / 'study.yaml').read_text().replace(', RankDistance', ''))
    ap = perquery[perquery['measure'] == 'AP'].assign(dataset_id='lareqa/xquad-r/all')
    assert rank_distance_by_query_language(load_experiment(tmp_path / 'study.yaml'), ap) is None


def test_a_study_keeps_its_report_and_charts_outside_the_ignored_output(tmp_path, monkeypatch):
    """The self-contained report and the rank-distance charts are copied (into a folder made for them); the
    per-model heatmaps, which the report embeds, are not."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from lareqa_table import keep_report
    results = tmp_path / 'runs' / 'results'
    results.mkdir(parents=True)
    (results / 'report.html').write_text('<html>report</html>')
    (results / 'rank_distance_lareqa_xquad-r.png').write_bytes(b'chart')
    (results / 'heatmap_mE5_lareqa_xquad-r.png').write_bytes(b'heatmap')
    kept = tmp_path / 'results' / 'study' / 'forward'
    keep_report(results, kept)
    assert sorted(p.name for p in kept.iterdir()) == ['rank_distance_lareqa_xquad-r.png', 'report.html']
    assert (kept / 'report.html').read_text() == '<html>report</html>'
