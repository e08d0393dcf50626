"""What an experiment writes to ``results/``: per-setting tables, the Mo / Cr / Mul summary, significance tests
and plots, each written atomically."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.evaluation.statistics import macro_average_perquery, paired_tests


def write_tables(perquery: pd.DataFrame, results: Path, datasets: Mapping[str, Sequence[str]], measures: Sequence,
                 baseline: str | None, correction: str) -> None:
    """``settings``, ``summary`` and (with a baseline) ``significance`` tables, as CSV and Markdown.

    Args:
        datasets: each experiment data set -> the setting ids evaluated for it.
        correction: a statsmodels multiple-testing method, or ``'none'``.
    """
    per_setting = perquery.groupby(['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'measure'],
                                   sort=False)['value'].mean().unstack('measure').reset_index()
    _write_table(per_setting, results / 'settings', index=False)
    summaries = []
    for dataset_id, settings in datasets.items():
        table = macro_average_perquery(perquery[perquery['dataset_id'].isin(settings)])
        table.columns = [f'{measure} {kind}' for measure, kind in table.columns]
        summaries.append(table.assign(dataset=dataset_id).reset_index().set_index(['dataset', 'name']))
    _write_table(pd.concat(summaries), results / 'summary')
    if baseline and perquery['name'].nunique() > 1:
        method = 'bonferroni' if correction == 'none' else correction
        tests = [paired_tests(perquery, baseline, str(m), correction=method).assign(measure=str(m))
                 for m in measures]
        tests = pd.concat(tests, ignore_index=True)
        if correction == 'none':
            tests = tests.drop(columns=['p_corrected']).assign(significant=tests['p'] < 0.05)
        _write_table(tests, results / 'significance', index=False)


def write_plots(perquery: pd.DataFrame, results: Path) -> None:
    """An AP heatmap per model and collection (query language x corpus language) and a rank-distance chart per
    query language (Mul)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ap = perquery[perquery['measure'] == 'AP']
    pairs = ap[ap['kind'] != 'Mul']
    for (name, collection), frame in pairs.groupby(['name', pairs['dataset_id'].str.rsplit('/', n=2).str[0]]):
        grid = frame.groupby(['query_lang', 'doc_lang'])['value'].mean().unstack('doc_lang')
        if grid.size < 2:
            continue
        figure, axes = plt.subplots(figsize=(1 + 0.6 * grid.shape[1], 1 + 0.5 * grid.shape[0]))
        image = axes.imshow(grid.to_numpy(), cmap='viridis', vmin=0, vmax=1)
        axes.set_xticks(range(grid.shape[1]), grid.columns)
        axes.set_yticks(range(grid.shape[0]), grid.index)
        axes.set_xlabel('corpus language')
        axes.set_ylabel('query language')
        for (i, j), value in pd.DataFrame(grid.to_numpy()).stack().items():
            axes.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize=7, color='white')
        axes.set_title(f'{name}: AP on {collection}')
        figure.colorbar(image)
        figure.tight_layout()
        figure.savefig(results / f'heatmap_{name}_{collection.replace("/", "_")}.png', dpi=120)
        plt.close(figure)
    distance = perquery[(perquery['measure'] == 'RankDistance') & (perquery['kind'] == 'Mul')]
    for collection, frame in distance.groupby(distance['dataset_id'].str.rsplit('/', n=1).str[0]):
        means = frame.groupby(['query_lang', 'name'])['value'].mean().unstack('name')
        axes = means.plot.bar(figsize=(2 + 0.5 * len(means) * len(means.columns) ** 0.5, 4))
        axes.set_ylabel('mean rank distance (lower: less language bias)')
        axes.set_title(f'Rank distance per query language, {collection} (Mul)')
        axes.figure.tight_layout()
        axes.figure.savefig(results / f'rank_distance_{collection.replace("/", "_")}.png', dpi=120)
        plt.close(axes.figure)


def _write_table(table: pd.DataFrame, stem: Path, index: bool = True) -> None:
    write_atomically(stem.with_suffix('.csv'), lambda tmp: table.to_csv(tmp, index=index))
    write_atomically(stem.with_suffix('.md'), lambda tmp: tmp.write_text(table.round(4).to_markdown(index=index)))
