"""Multilingual encoders vs artificial code-switching (ACS), zero-shot in both directions (Mo / Cr / Mul).

Usage: python benchmarks/acs_comparison.py [FILE ...] [--out STEM]

Runs examples/acs_vs_multilingual.yaml (train on MLQA-R, evaluate on XQuAD-R) and
examples/acs_vs_multilingual_reverse.yaml (train on XQuAD-R, evaluate on MLQA-R), or the experiment files given,
with the package's experiment runner (everything cached under each file's output folder, so a second call only
re-tabulates), then writes benchmarks/results/STEM.md and STEM.tests.csv (STEM: acs_comparison): nDCG@10 (the
headline), AP, R@100 and rank distance per model and direction, as mean +- std over the files' seeds; the same for
the settings whose languages were all seen in training, those that add only languages a lexicon covers (ar, de, el,
es, hi, ru, tr), and those with a language neither covers; and paired t-tests over (setting, query) pairs (seeds
averaged per query), Holm-corrected together, for the comparisons the research question asks about. Each file's
report.html (language-pair heatmaps, difference maps with the significant pairs marked, significance tables) and
rank-distance chart are kept in benchmarks/results/STEM/FILE/.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from lareqa_table import coverage_of, keep_report, summary_markdown, training_data

import pyterrier_hybrid as ph
from pyterrier_hybrid.experiment.runner import ExperimentRunner
from pyterrier_hybrid.training.trainer import load_training_data

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / 'examples'
FILES = [EXAMPLES / 'acs_vs_multilingual.yaml', EXAMPLES / 'acs_vs_multilingual_reverse.yaml']
# (system, baseline): what each comparison asks
COMPARISONS = [
    ('mE5+hybrid', 'mE5'), ('mE5+ACS', 'mE5'), ('mE5+En-En', 'mE5'),
    ('mE5+ACS', 'mE5+hybrid'),    # code-switched English vs real translations, same model and budget
    ('mE5+ACS', 'mE5+En-En'),     # does switching help over the same English data unswitched?
    ('mE5+hybrid+ACS-unseen', 'mE5+hybrid'),  # do ACS copies extend hybrid batches to languages without data?
    ('MiniLM+ACS', 'MiniLM'),     # ACS on a monolingual model
    ('MiniLM+ACS', 'MiniLM+En-En'),
    ('MiniLM+ACS', 'mE5'),        # monolingual + ACS vs multilingual pre-training
]
MEASURES = ['nDCG@10', 'AP', 'R@100']


def direction(spec) -> str:
    """What a file compares: its trained models' data, then the data sets they are evaluated on."""
    return f'{training_data(spec)} -> {", ".join(spec.datasets)}'


def perquery_of(spec, reports: Path) -> pd.DataFrame:
    """Run (or reuse) an experiment, keep its report (with the heatmaps and difference maps) in ``reports``, and
    return its per-query values."""
    runner = ExperimentRunner(spec)
    keep_report(runner.run(), reports)
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


def tests(perquery: pd.DataFrame) -> pd.DataFrame:
    """Paired t-tests of COMPARISONS per kind and measure, seeds averaged per query (uncorrected p; main corrects
    them all together). A comparison whose models the file lacks is left out."""
    rows = []
    names = set(perquery['name'])
    for measure in MEASURES:
        for system, baseline in COMPARISONS:
            if {system, baseline} <= names:
                pair = perquery[perquery['name'].isin([system, baseline])]
                rows.append(ph.paired_tests(pair, baseline, measure).assign(measure=measure))
    return pd.concat(rows, ignore_index=True).drop(columns=['p_corrected', 'significant'])


def recipes(spec) -> list[str]:
    """One line per trained model: its data, budget and what sets it apart."""
    lines = []
    for model in spec.models.values():
        if model.recipe is not None:
            r = model.recipe
            lines.append(f'* {model.name}: {model.data}, {r.strategy}, {r.steps} steps x batch {r.batch_size}, '
                         f'max length {r.max_length}, lr {r.learning_rate}, temperature {r.temperature}, frozen '
                         f'embeddings {r.freeze_embeddings}, code-switching {r.code_switching is not None}, '
                         f'seeds {spec.seeds or [r.seed]}')
    return lines


def main() -> None:
    from statsmodels.stats.multitest import multipletests

    from pyterrier_hybrid.atomic import write_atomically
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('files', nargs='*', default=FILES, help='experiment files (default: both directions)')
    parser.add_argument('--out', default='acs_comparison', help='stem of the files written to benchmarks/results/')
    args = parser.parse_args()
    out = HERE / 'results'
    all_tests, lines = [], []
    for file in args.files:
        spec = ph.load_experiment(file)
        lines += [f'{direction(spec)} ({Path(file).name}):', '', *recipes(spec),
                  f'* switching: {switch_report(spec)}', '']
        perquery = perquery_of(spec, out / args.out / Path(file).stem)
        coverage = coverage_of(spec)
        perquery['languages'] = [coverage(q, d) for q, d in zip(perquery['query_lang'], perquery['doc_lang'])]
        for subset, frame in [('all languages', perquery), *perquery.groupby('languages')]:
            lines += [f'### {direction(spec)}, {subset}', '', summary_markdown(spec, frame), '']
        all_tests.append(tests(perquery).assign(direction=direction(spec)))
    significance = pd.concat(all_tests, ignore_index=True)
    reject, corrected, _, _ = multipletests(significance['p'], method='holm')
    significance = significance.assign(p_holm=corrected, significant=reject)
    write_atomically(out / f'{args.out}.tests.csv', lambda tmp: significance.to_csv(tmp, index=False))
    lines += [f'### Paired t-tests over (setting, query) pairs (seeds averaged per query), Holm-corrected over all '
              f'{len(significance)} rows', '',
              significance[['direction', 'measure', 'kind', 'name', 'baseline', 'mean', 'baseline_mean', 'delta',
                            'p_holm', 'significant']].round(4).to_markdown(index=False), '']
    write_atomically(out / f'{args.out}.md', lambda tmp: tmp.write_text('\n'.join(lines)))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
