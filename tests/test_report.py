"""The experiment report: tables people read and programs parse, the self-contained HTML, and its look in a browser."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from pyterrier_hybrid.experiment.config import ModelSpec
from pyterrier_hybrid.experiment.report import Report, describe_model
from pyterrier_hybrid.training.recipe import Recipe

LANGS = ['ar', 'de', 'el', 'en', 'es', 'hi', 'ru', 'th', 'tr', 'vi', 'zh']  # XQuAD-R's 11: 11 x 12 heatmaps
MEASURES = ['AP', 'nDCG@10', 'R@100', 'RankDistance']
QUERIES = 8


def xquad_like(seeded: bool = True) -> pd.DataFrame:
    """Per-query values of mE5 (pretrained, no seed) and of hybrid and xy (seeds 1 and 2) on all 132 settings:
    hybrid gains about 0.1 nDCG@10 where the documents are German, xy loses about 0.1 where they are Thai; elsewhere
    the two seeds scatter around mE5 and average to it."""
    rng = np.random.default_rng(0)
    rows = []
    for query_lang in LANGS:
        for doc_lang in [*LANGS, 'all']:
            kind = 'Mul' if doc_lang == 'all' else 'Mo' if doc_lang == query_lang else 'Cr'
            dataset_id = f'lareqa/xquad-r/{query_lang}' + ('' if kind == 'Mul' else f'/{doc_lang}')
            base = rng.uniform(0.3, 0.8, QUERIES)
            effect, scatter = rng.normal(0.1, 0.01, QUERIES), rng.normal(0, 0.01, QUERIES)
            runs = [('mE5', None, base)] + [
                (name, seed, base + effect * sign + scatter * (-1) ** seed)
                for name, sign in [('hybrid', doc_lang == 'de'), ('xy', -(doc_lang == 'th'))] for seed in (1, 2)]
            for name, seed, ndcg in runs:
                for measure, values in [('AP', ndcg - 0.05), ('nDCG@10', ndcg), ('R@100', np.minimum(1, ndcg + 0.2)),
                                        ('RankDistance', 900 * (1 - ndcg) if kind == 'Mul' else 0 * ndcg)]:
                    rows.append(pd.DataFrame({'name': name, 'seed': seed, 'dataset_id': dataset_id, 'kind': kind,
                                              'query_lang': query_lang, 'doc_lang': doc_lang, 'measure': measure,
                                              'qid': [f'{query_lang}-{i}' for i in range(QUERIES)], 'value': values}))
    frame = pd.concat(rows, ignore_index=True)
    return frame if seeded else frame.drop(columns='seed')


MODELS = [ModelSpec('mE5', pretrained='intfloat/multilingual-e5-small'),
          ModelSpec('hybrid', base='mE5', data='lareqa/mlqa-r',
                    recipe=Recipe(strategy='hybrid', steps=40, batch_size=16, max_length=64, learning_rate=5e-5,
                                  temperature=0.01)),
          ModelSpec('xy', base='mE5', data='lareqa/mlqa-r', recipe=Recipe(strategy='xy', steps=40, batch_size=16))]


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    frame = xquad_like()
    results = tmp_path_factory.mktemp('results')
    Report(frame, {'lareqa/xquad-r': list(frame['dataset_id'].unique())}, MEASURES, baseline='mE5',
           correction='holm', title='synthetic', models=[(m.name, describe_model(m)) for m in MODELS],
           elapsed=125.0).write(results)
    return results


def test_html_is_self_contained(report):
    page = (report / 'report.html').read_text(encoding='utf-8')
    assert not re.search(r'<script|<link|(src|href)="(?!data:)', page), 'nothing to fetch: it opens offline'
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3 + 2 + 1  # a heatmap per model, a difference per non-baseline model, rank distance
    assert all(base64.b64decode(image).startswith(b'\x89PNG') for image in images)
    for png in ['heatmap_hybrid_lareqa_xquad-r', 'difference_hybrid_mE5_lareqa_xquad-r',
                'rank_distance_lareqa_xquad-r']:
        assert (report / f'{png}.png').read_bytes().startswith(b'\x89PNG')
        assert f']({png}.png)' in (report / 'report.md').read_text(encoding='utf-8')


def test_summary_reads_as_a_person_writes_it(report):
    summary = (report / 'summary.md').read_text(encoding='utf-8')
    assert '## XQuAD-R (lareqa/xquad-r)' in summary and "('lareqa" not in summary
    header = next(line for line in summary.splitlines() if line.startswith('| model'))
    columns = [c.strip() for c in header.strip('|').split('|')]
    assert columns == ['model', 'seeds', 'nDCG@10 Mo', 'nDCG@10 Cr', 'nDCG@10 Mul', 'AP Mo', 'AP Cr', 'AP Mul',
                       'R@100 Mo', 'R@100 Cr', 'R@100 Mul', 'rank distance Mul'], 'headline first, no Mo/Cr distance'
    rows = {line.split('|')[1].strip(): line for line in summary.splitlines() if line.startswith('| ')}
    assert '±' in rows['hybrid'] and '±' not in rows['mE5'], 'spread over seeds; none for one pretrained run'
    assert list(rows)[1:] == ['mE5', 'hybrid', 'xy'], 'baseline first, then the file order'
    assert '**' in rows['hybrid'] and r'\*' in rows['hybrid'], 'best in bold; * (escaped) for significant'


def test_summary_csv_is_machine_readable_and_exact(report):
    summary = pd.read_csv(report / 'summary.csv', index_col=[0, 1])
    assert list(summary.index) == [('lareqa/xquad-r', n) for n in ('mE5', 'hybrid', 'xy')]
    assert summary.dtypes.map(pd.api.types.is_numeric_dtype).all()
    assert 'RankDistance Mul' in summary and 'RankDistance Mo' not in summary and 'nDCG@10 Cr std' in summary
    frame = xquad_like()
    cr = frame[(frame['name'] == 'hybrid') & (frame['measure'] == 'nDCG@10') & (frame['kind'] == 'Cr')]
    per_seed = cr.groupby(['seed', 'dataset_id'])['value'].mean().groupby('seed').mean()
    assert summary.loc[('lareqa/xquad-r', 'hybrid'), 'nDCG@10 Cr'] == pytest.approx(per_seed.mean(), rel=1e-12)
    assert summary.loc[('lareqa/xquad-r', 'hybrid'), 'nDCG@10 Cr std'] == pytest.approx(per_seed.std(), rel=1e-12)
    assert summary.loc[('lareqa/xquad-r', 'mE5'), 'seeds'] == 1 and np.isnan(
        summary.loc[('lareqa/xquad-r', 'mE5'), 'nDCG@10 Cr std'])


def test_difference_heatmaps_mark_the_pairs_that_differ(report):
    pairs = pd.read_csv(report / 'pair_significance.csv')
    ndcg = pairs[pairs['measure'] == 'nDCG@10']
    for name, doc_lang, sign in [('hybrid', 'de', 1), ('xy', 'th', -1)]:
        found = ndcg[(ndcg['name'] == name) & ndcg['significant']]
        assert set(found['doc_lang']) == {doc_lang} and len(found) == len(LANGS)
        assert (np.sign(found['delta']) == sign).all() and (found['pairs'] == QUERIES).all()
    text = (report / 'report.md').read_text(encoding='utf-8')
    assert 'hybrid − mE5: significantly better in 11 and worse in 0 of 132 settings' in text
    assert 'xy − mE5: significantly better in 0 and worse in 11 of 132 settings' in text
    assert set(pairs.loc[pairs['measure'] == 'RankDistance', 'kind']) == {'Mul'}


def test_a_comparison_sets_two_models_head_to_head(tmp_path):
    """[hybrid, xy]: hybrid is better where the documents are German (hybrid's gain) and Thai (xy's loss), with its
    own tests against xy, beside the maps against the baseline."""
    frame = xquad_like()
    Report(frame, {'lareqa/xquad-r': list(frame['dataset_id'].unique())}, ['nDCG@10'], baseline='mE5',
           comparisons=[('hybrid', 'xy')]).write(tmp_path)
    text = (tmp_path / 'report.md').read_text(encoding='utf-8')
    assert '### XQuAD-R (lareqa/xquad-r): head to head' in text
    assert 'hybrid − xy: significantly better in 22 and worse in 0 of 132 settings' in text
    assert 'hybrid − mE5: significantly better in 11 and worse in 0 of 132 settings' in text
    assert (tmp_path / 'difference_hybrid_xy_lareqa_xquad-r.png').read_bytes().startswith(b'\x89PNG')
    pairs = pd.read_csv(tmp_path / 'pair_significance.csv')
    head = pairs[pairs['baseline'] == 'xy']
    assert set(head['name']) == {'hybrid'} and set(head.loc[head['significant'], 'doc_lang']) == {'de', 'th'}
    assert set(pairs.loc[pairs['baseline'] == 'mE5', 'name']) == {'hybrid', 'xy'}


def test_significance_table_reads_and_parses(report):
    md = (report / 'significance.md').read_text(encoding='utf-8')
    assert 'p (holm-corrected)' in md and 'p_corrected' not in md and 'RankDistance' not in md
    assert not re.search(r'rank distance \| (Mo|Cr)', md)
    tests = pd.read_csv(report / 'significance.csv')
    assert {'dataset', 'measure', 'kind', 'name', 'p', 'p_corrected', 'significant'} <= set(tests.columns)
    assert set(tests.loc[tests['measure'] == 'RankDistance', 'kind']) == {'Mul'}
    assert tests.set_index(['measure', 'kind', 'name']).loc[('nDCG@10', 'Cr', 'hybrid'), 'significant']


def test_report_names_recipes_seeds_and_environment(report):
    text = (report / 'report.md').read_text(encoding='utf-8')
    assert 'pretrained intfloat/multilingual-e5-small' in text
    assert ('hybrid (α = 0.5) from mE5 on lareqa/mlqa-r, 40 steps × 16 = 640 pairs, max length 64, lr 5e-05, '
            'temperature 0.01') in text
    assert re.search(r'\| hybrid +\| 1, 2 +\|', text) and re.search(r'\| mE5 \(baseline\) +\| — +\|', text)
    for package in ('torch', 'transformers', 'sentence-transformers', 'pyterrier'):
        assert re.search(rf'\| {package} +\| \d+\.\d+', text), package
    assert re.search(r'\| CPU +\| \S', text) and '| GPU ' in text and '2.1 min (125 s' in text


def test_a_recipe_line_names_what_sets_a_model_apart():
    from pyterrier_hybrid.experiment.config import ModelSpec
    from pyterrier_hybrid.training.recipe import Recipe
    lines = {name: describe_model(ModelSpec(name, base='mE5', data='lareqa/mlqa-r', recipe=Recipe(**options)))
             for name, options in [('plain', {}), ('mined', {'negative_language': 'mined'}),
                                   ('distilled', {'distillation': 0.5})]}
    assert 'mined cross-lingual negatives' in lines['mined']
    assert 'distillation weight 0.5 from the base model' in lines['distilled']
    assert len(set(lines.values())) == 3, 'two different recipes read the same'


def test_report_without_seeds_or_baseline(tmp_path):
    frame = xquad_like(seeded=False)
    frame = frame[frame['query_lang'].isin(['de', 'en']) & frame['doc_lang'].isin(['de', 'en', 'all'])]
    Report(frame, {'lareqa/xquad-r': list(frame['dataset_id'].unique())}, MEASURES).write(tmp_path)
    summary = (tmp_path / 'summary.md').read_text(encoding='utf-8')
    assert '±' not in summary and r'\*' not in summary, 'no spread, no significance marks'
    assert not (tmp_path / 'significance.csv').exists()
    assert (tmp_path / 'report.html').read_text(encoding='utf-8').count('data:image/png') == 3 + 1


@pytest.mark.skipif(shutil.which('chromium') is None, reason='needs chromium (apt-get install -y chromium)')
def test_report_renders_in_a_headless_browser(report, tmp_path):
    from PIL import Image
    shot = tmp_path / 'shot.png'
    subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                    '--disable-component-update', '--disable-sync', '--no-first-run',
                    f'--user-data-dir={tmp_path / "profile"}', f'--screenshot={shot}', '--window-size=1400,4000',
                    (report / 'report.html').as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert('RGB'))
    assert pixels.shape == (4000, 1400, 3)
    viridis_green = (np.abs(pixels.astype(int) - [33, 145, 140]).sum(axis=2) < 40).mean()
    assert viridis_green > 0.005, 'the embedded heatmaps are drawn'


def test_a_report_without_measures_says_so(tmp_path):
    with pytest.raises(ValueError, match='at least one measure'):
        Report(xquad_like().head(10), {'lareqa/xquad-r': ['lareqa/xquad-r/ar/ar']}, [])


def test_a_mul_only_measure_is_corrected_over_its_mul_tests_alone():
    # rank distance is 0 in Mo and Cr by construction: their NaN tests must not join its correction family
    frame = xquad_like()
    lower = (frame['name'] == 'hybrid') & (frame['measure'] == 'RankDistance') & (frame['kind'] == 'Mul')
    frame.loc[lower, 'value'] -= np.random.default_rng(1).normal(5, 20, lower.sum())  # a weak effect: p ~ 0.01
    report = Report(frame, {'lareqa/xquad-r': list(frame['dataset_id'].unique())}, ['RankDistance'],
                    baseline='mE5', correction='bonferroni')
    tests = report.pooled_tests('lareqa/xquad-r').set_index('name')
    assert list(tests['kind']) == ['Mul', 'Mul'] and 0.001 < tests.loc['hybrid', 'p'] < 0.05
    np.testing.assert_allclose(tests['p_corrected'], np.minimum(1, 2 * tests['p']))  # 2 tests, not 6


def test_a_lower_is_better_headline_counts_a_decrease_as_better(tmp_path):
    """Rank distance as the only measure: a model that lowers it is better, in the captions and in blue."""
    frame = xquad_like()
    lower = (frame['name'] == 'hybrid') & (frame['measure'] == 'RankDistance') & (frame['kind'] == 'Mul')
    frame.loc[lower, 'value'] -= np.random.default_rng(2).normal(100, 10, lower.sum())
    Report(frame, {'lareqa/xquad-r': list(frame['dataset_id'].unique())}, ['RankDistance'], baseline='mE5',
           correction='holm').write(tmp_path)
    text = (tmp_path / 'report.md').read_text(encoding='utf-8')
    assert 'hybrid − mE5: significantly better in 11 and worse in 0 of 11 settings' in text


@pytest.mark.parametrize('langs', [LANGS[:7], LANGS], ids=['7x8', '11x12'])
def test_heatmap_numbers_fit_inside_their_boxes(langs):
    """Every printed value, starred and bold in its box, is narrower than the box, at MLQA-R's 7 x 8 as at XQuAD-R's
    11 x 12 (a 7 x 8 map once printed 10-point bold '-0.03*' across its box's edges)."""
    from pyterrier_hybrid.experiment.report import _heatmap
    grid = pd.DataFrame(-0.0306, index=langs, columns=[*langs, 'all'])
    figure = _heatmap(grid, 'title', 'Δ nDCG@10', 'RdBu', -0.6, 0.6, '+.2f',
                      marks=pd.Index([(q, d) for q in langs for d in grid.columns]))
    figure.canvas.draw()
    axes = figure.axes[0]
    box_width = min(box.get_window_extent().width for box in axes.patches)
    widths = [text.get_window_extent().width for text in axes.texts]
    assert len(axes.patches) == len(widths) == grid.size and max(widths) < box_width, (max(widths), box_width)
