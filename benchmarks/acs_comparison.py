"""Multilingual encoders vs artificial code-switching (ACS), zero-shot in both directions (Mo / Cr / Mul).

Usage: python benchmarks/acs_comparison.py

Runs examples/acs_vs_multilingual.yaml (train on MLQA-R, evaluate on XQuAD-R) and
examples/acs_vs_multilingual_reverse.yaml (train on XQuAD-R, evaluate on MLQA-R) with the package's experiment
runner (everything cached under examples/runs/, so a second call only re-tabulates), then writes
benchmarks/results/acs_comparison.{md,csv} and acs_comparison.tests.csv: AP, nDCG@10 and rank distance per
model and direction; the same for settings whose languages the lexicons cover (ar, de, el, es, hi, ru, tr and
English) and for those involving an uncovered language (th, vi, zh); and paired t-tests over (setting, query)
pairs, Holm-corrected together, for the comparisons the research question asks about.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from lareqa_table import setting_languages

import pyterrier_hybrid as ph
from pyterrier_hybrid.experiment.runner import ExperimentRunner
from pyterrier_hybrid.training.trainer import load_training_data

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / 'examples'
DIRECTIONS = {'MLQA-R -> XQuAD-R': 'acs_vs_multilingual.yaml', 'XQuAD-R -> MLQA-R': 'acs_vs_multilingual_reverse.yaml'}
COVERED = {'en', 'ar', 'de', 'el', 'es', 'hi', 'ru', 'tr'}  # ../shared/data/lexicons: en-{ar,de,el,es,hi,ru,tr}
# (system, baseline): what each comparison asks
COMPARISONS = [
    ('mE5+hybrid', 'mE5'), ('mE5+ACS', 'mE5'), ('mE5+En-En', 'mE5'),
    ('mE5+ACS', 'mE5+hybrid'),    # code-switched English vs real translations, same model and budget
    ('mE5+ACS', 'mE5+En-En'),     # does switching help over the same English data unswitched?
    ('MiniLM+ACS', 'MiniLM'),     # ACS on a monolingual model
    ('MiniLM+ACS', 'mE5'),        # monolingual + ACS vs multilingual pre-training
]
MEASURES = ['AP', 'nDCG@10']


def coverage(query_lang: str, doc_lang: str) -> str:
    """'covered' when the lexicons know every language of a setting (Mul: the query's)."""
    return 'covered' if setting_languages(query_lang, doc_lang) <= COVERED else 'uncovered (th, vi, zh)'


def perquery_of(spec) -> pd.DataFrame:
    """Run (or reuse) an experiment and return its per-query values."""
    runner = ExperimentRunner(spec)
    runner.run()
    return runner.evaluate()  # every seed of every model, all cached by run()


def switch_report(spec) -> str:
    """The realised switch ratio per language and the lexicons' coverage on the ACS model's training data, as the
    experiment runner builds and reports it."""
    model = spec.models['mE5+ACS']
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger('pyterrier_hybrid').addHandler(handler)
    logging.getLogger('pyterrier_hybrid').setLevel(logging.INFO)
    load_training_data(model.data, model.recipe.code_switching)
    return f'{model.data}, English side, p {model.recipe.code_switching.p}: {logged[-1]}'


def summary(perquery: pd.DataFrame) -> pd.DataFrame:
    table = ph.macro_average_perquery(perquery)
    keep = [(m, k) for m in MEASURES for k in ('Mo', 'Cr', 'Mul')] + [('RankDistance', 'Mul')]
    table = table[[c for c in keep if c in table.columns]]
    table.columns = [f'{measure} {kind}' for measure, kind in table.columns]
    return table


def tests(perquery: pd.DataFrame) -> pd.DataFrame:
    """Paired t-tests of COMPARISONS per kind and measure (uncorrected p; main corrects them all together)."""
    rows = []
    for measure in MEASURES:
        for system, baseline in COMPARISONS:
            pair = perquery[perquery['name'].isin([system, baseline])]
            rows.append(ph.paired_tests(pair, baseline, measure).assign(measure=measure))
    return pd.concat(rows, ignore_index=True).drop(columns=['p_corrected', 'significant'])


def main() -> None:
    out = HERE / 'results'
    tables, all_tests, switching = [], [], []
    for direction, name in DIRECTIONS.items():
        spec = ph.load_experiment(EXAMPLES / name)
        switching.append(f'{direction}: {switch_report(spec)}')
        perquery = perquery_of(spec)
        perquery['languages'] = [coverage(q, d) for q, d in zip(perquery['query_lang'], perquery['doc_lang'])]
        for subset, frame in [('all languages', perquery), *perquery.groupby('languages')]:
            tables.append(summary(frame).assign(direction=direction, languages=subset))
        all_tests.append(tests(perquery).assign(direction=direction))
    table = pd.concat(tables).reset_index().set_index(['direction', 'languages', 'name'])
    from statsmodels.stats.multitest import multipletests
    significance = pd.concat(all_tests, ignore_index=True)
    reject, corrected, _, _ = multipletests(significance['p'], method='holm')
    significance = significance.assign(p_holm=corrected, significant=reject)
    table.to_csv(out / 'acs_comparison.csv')
    significance.to_csv(out / 'acs_comparison.tests.csv', index=False)
    lines = ['Budget per trained model: 60 steps x batch 16 (+1 hard negative), max length 64, lr 5e-5, seed 42; '
             'mE5 models with frozen word embeddings. ACS: the English side of the training set, queries and '
             'passages ML-CS switched (p 0.5) with the seven FreeDict lexicons en-{ar,de,el,es,hi,ru,tr}.', '',
             *[f'* {line}' for line in switching], '']
    for (direction, subset), frame in table.groupby(level=[0, 1], sort=False):
        lines += [f'### {direction}, {subset}', '', frame.droplevel([0, 1]).round(3).to_markdown(), '']
    lines += [f'### Paired t-tests over (setting, query) pairs (pooled means), Holm-corrected over all '
              f'{len(significance)} rows', '',
              significance[['direction', 'measure', 'kind', 'name', 'baseline', 'mean', 'baseline_mean', 'delta',
                            'p_holm', 'significant']].round(4).to_markdown(index=False), '']
    (out / 'acs_comparison.md').write_text('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
