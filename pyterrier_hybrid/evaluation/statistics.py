"""The papers' Mo / Cr / Mul macro averages and paired significance tests over (setting, query) pairs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


#: What identifies one query's score, seeds aside.
_QUERY_KEYS = ['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'qid', 'measure']


def seed_means(perquery: pd.DataFrame) -> pd.DataFrame:
    """Per-query values averaged over training seeds: one row per (system, setting, query, measure).

    A system trained with several seeds is tested by its mean score on each query, so its seeds are not counted as
    extra queries (which would inflate the significance); without a ``seed`` column nothing changes."""
    return perquery.groupby(_QUERY_KEYS, sort=False, dropna=False)['value'].mean().reset_index()


def _wide(perquery: pd.DataFrame) -> pd.DataFrame:
    """pt.Experiment's per-query long format -> one row per (system, setting, query), one column per measure."""
    return seed_means(perquery).pivot_table(index=_QUERY_KEYS[:-1], columns='measure', values='value',
                                            sort=False).reset_index()


def macro_average_perquery(perquery: pd.DataFrame) -> pd.DataFrame:
    """:func:`macro_average` of per-query results (``evaluate_settings(..., perquery=True)``)."""
    per_setting = _wide(perquery).groupby(['name', 'dataset_id', 'kind'], sort=False).mean(numeric_only=True)
    return macro_average(per_setting.reset_index())


def seed_macro_averages(perquery: pd.DataFrame) -> pd.Series:
    """Each (name, seed)'s Mo / Cr / Mul macro average per measure: queries averaged per setting, settings per kind
    (seed NaN where the values have none)."""
    frame = perquery if 'seed' in perquery.columns else perquery.assign(seed=None)
    per_setting = frame.groupby(['name', 'seed', 'measure', 'kind', 'dataset_id'], sort=False,
                                dropna=False)['value'].mean()
    return per_setting.groupby(['name', 'seed', 'measure', 'kind'], sort=False, dropna=False).mean()


def seed_summary(perquery: pd.DataFrame) -> pd.DataFrame:
    """The Mo / Cr / Mul macro averages with their spread over training seeds.

    Each seed's macro average (queries averaged per setting, settings averaged per kind) is one sample, so ``std``
    says how much a result moves with the seed (NaN for a single seed: a pretrained model or a one-seed run).

    Returns:
        One row per (name, measure, kind), kinds ordered Mo, Cr, Mul: ``mean``, ``std`` and ``seeds`` (how many).
    """
    per_seed = seed_macro_averages(perquery)
    summary = per_seed.groupby(['name', 'measure', 'kind'], sort=False).agg(['mean', 'std', 'count'])
    summary = summary.rename(columns={'count': 'seeds'}).reset_index()
    order = {column: {v: i for i, v in enumerate(perquery[column].unique())} for column in ('name', 'measure')}
    order['kind'] = {k: i for i, k in enumerate(KINDS)}
    return summary.sort_values(['name', 'measure', 'kind'], key=lambda c: c.map(order[c.name])).reset_index(drop=True)


def _scores(perquery: pd.DataFrame, baseline: str, measure: str) -> pd.DataFrame:
    """One row per (setting, query), one column per system: the seed-averaged values of ``measure``."""
    means = seed_means(perquery[perquery['measure'] == measure])
    scores = means.pivot_table(index=['dataset_id', 'kind', 'query_lang', 'doc_lang', 'qid'], columns='name',
                               values='value', sort=False)
    if baseline not in scores.columns:
        raise KeyError(f'baseline {baseline!r} is not among the systems: {", ".join(scores.columns)}')
    return scores


def _ttests(scores: pd.DataFrame, baseline: str, by: list[str]) -> pd.DataFrame:
    """Paired t-tests (``scipy.stats.ttest_rel``'s two-sided test, computed for all groups at once) of every system
    against ``baseline`` within each group of rows; a row pairs the two systems' scores on one query.

    Returns:
        One row per (system, group): ``name, baseline, *by, pairs, mean, baseline_mean, delta, p``.
    """
    from scipy.stats import t as student
    frames = []
    for name in scores.columns.drop(baseline):
        pairs = scores[[name, baseline]].dropna()
        grouped = pairs.assign(delta=pairs[name] - pairs[baseline]).groupby(level=by, sort=False)
        tests = grouped.agg(pairs=('delta', 'count'), mean=(name, 'mean'), baseline_mean=(baseline, 'mean'),
                            delta=('delta', 'mean'), sd=('delta', 'std'))
        with np.errstate(divide='ignore', invalid='ignore'):
            statistic = tests['delta'] / (tests['sd'] / np.sqrt(tests['pairs']))
        tests['p'] = 2 * student.sf(statistic.abs(), tests['pairs'] - 1)
        frames.append(tests.drop(columns='sd').reset_index().assign(name=name, baseline=baseline))
    columns = ['name', 'baseline', *by, 'pairs', 'mean', 'baseline_mean', 'delta', 'p']
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _corrected(tests: pd.DataFrame, correction: str, alpha: float) -> pd.DataFrame:
    """``p_corrected`` and ``significant`` for ``tests`` as one family; ``'none'`` leaves p as it is.

    A p-value of NaN (a system scoring exactly as the baseline on every query) counts as 1: no evidence."""
    p = tests['p'].fillna(1.0)
    if correction == 'none' or not len(tests):
        return tests.assign(p_corrected=p, significant=p < alpha)
    from statsmodels.stats.multitest import multipletests
    reject, corrected, _, _ = multipletests(p, alpha=alpha, method=correction)
    return tests.assign(p_corrected=corrected, significant=reject)


def paired_tests(perquery: pd.DataFrame, baseline: str, measure: str, correction: str = 'holm',
                 alpha: float = 0.05) -> pd.DataFrame:
    """Paired t-tests of every system against ``baseline``, per kind, over all (setting, query) pairs.

    The Mo / Cr / Mul numbers are means over many settings, so each test pairs a system's and the baseline's
    score on the same query in the same setting (averaged over seeds), pooled over the settings of a kind; p-values
    are corrected for all the tests together (``statsmodels`` ``multipletests`` methods, as
    ``pt.Experiment(correction=...)``, or ``'none'``).
    """
    tests = _ttests(_scores(perquery, baseline, measure), baseline, by=['kind'])
    tests = tests.sort_values('kind', key=lambda c: c.map({k: i for i, k in enumerate(KINDS)}), kind='stable')
    return _corrected(tests.reset_index(drop=True), correction, alpha)


def pair_tests(perquery: pd.DataFrame, baseline: str, measure: str, correction: str = 'holm',
               alpha: float = 0.05) -> pd.DataFrame:
    """Paired t-tests of every system against ``baseline`` in each setting (language pair) on its own.

    Where :func:`paired_tests` asks whether a system differs on a kind as a whole, this asks where: each test pairs
    the two systems' seed-averaged scores on the queries of one setting. A system's tests over the whole grid are
    one family, corrected together (``correction`` as in :func:`paired_tests`).

    Returns:
        One row per (system, setting): ``name, baseline, dataset_id, kind, query_lang, doc_lang, pairs, mean,
        baseline_mean, delta, p, p_corrected, significant``.
    """
    tests = _ttests(_scores(perquery, baseline, measure), baseline,
                    by=['dataset_id', 'kind', 'query_lang', 'doc_lang'])
    families = [_corrected(family, correction, alpha) for _, family in tests.groupby('name', sort=False)]
    return pd.concat(families, ignore_index=True) if families else _corrected(tests, correction, alpha)
