"""The papers' Mo / Cr / Mul macro averages and paired significance tests over (setting, query) pairs."""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .settings import KINDS


def macro_average(results: pd.DataFrame, measures: Sequence | None = None) -> pd.DataFrame:
    """The Mo / Cr / Mul table: each measure averaged over the settings of each kind, per system.

    Args:
        results: rows of :func:`evaluate_settings` (or any frame with ``name``, ``kind`` and measure columns).
        measures: which measures to keep (default: every numeric column that is not a significance column).

    Returns:
        A frame indexed by system name with columns ``(measure, kind)``, kinds ordered Mo, Cr, Mul.
    """
    missing = {'name', 'kind'} - set(results.columns)
    if missing:
        raise KeyError(f'results lack column(s) {", ".join(sorted(missing))}; pass the output of evaluate_settings')
    if measures is None:
        numeric = results.select_dtypes('number').columns
        columns = [c for c in numeric if not c.endswith((' +', ' -', ' p-value', ' reject', ' p-value corrected'))]
    else:
        columns = [str(m) for m in measures]
    table = results.groupby(['name', 'kind'], sort=False)[columns].mean().unstack('kind')
    kinds = [k for k in KINDS if k in results['kind'].unique()]
    return table.reindex(columns=pd.MultiIndex.from_product([columns, kinds]))


def _wide(perquery: pd.DataFrame) -> pd.DataFrame:
    """pt.Experiment's per-query long format -> one row per (system, setting, query), one column per measure."""
    keys = ['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'qid']
    return perquery.pivot_table(index=keys, columns='measure', values='value').reset_index()


def macro_average_perquery(perquery: pd.DataFrame) -> pd.DataFrame:
    """:func:`macro_average` of per-query results (``evaluate_settings(..., perquery=True)``)."""
    per_setting = _wide(perquery).groupby(['name', 'dataset_id', 'kind'], sort=False).mean(numeric_only=True)
    return macro_average(per_setting.reset_index())


def paired_tests(perquery: pd.DataFrame, baseline: str, measure: str, correction: str = 'holm',
                 alpha: float = 0.05) -> pd.DataFrame:
    """Paired t-tests of every system against ``baseline``, per kind, over all (setting, query) pairs.

    The Mo / Cr / Mul numbers are means over many settings, so each test pairs a system's and the baseline's
    score on the same query in the same setting, pooled over the settings of a kind; p-values are corrected for
    all the tests together (``statsmodels`` ``multipletests`` methods, as ``pt.Experiment(correction=...)``).
    """
    from scipy.stats import ttest_rel
    from statsmodels.stats.multitest import multipletests
    wide = _wide(perquery[perquery['measure'] == measure])
    scores = wide.pivot_table(index=['dataset_id', 'kind', 'qid'], columns='name', values=measure)
    if baseline not in scores.columns:
        raise KeyError(f'baseline {baseline!r} is not among the systems: {", ".join(scores.columns)}')
    rows = []
    for kind in [k for k in KINDS if k in scores.index.get_level_values('kind')]:
        of_kind = scores.xs(kind, level='kind')
        for name in of_kind.columns.drop(baseline):
            pair = of_kind[[name, baseline]].dropna()
            test = ttest_rel(pair[name], pair[baseline])
            rows.append({'kind': kind, 'name': name, 'baseline': baseline, 'pairs': len(pair),
                         'mean': pair[name].mean(), 'baseline_mean': pair[baseline].mean(),
                         'delta': pair[name].mean() - pair[baseline].mean(), 'p': float(test.pvalue)})
    result = pd.DataFrame(rows)
    if len(result):
        reject, corrected, _, _ = multipletests(result['p'].fillna(1.0), alpha=alpha, method=correction)
        result = result.assign(p_corrected=corrected, significant=reject)
    return result
