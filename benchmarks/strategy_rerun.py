"""The strategy study rerun from its experiment file, set against the former table seed by seed (#12).

Usage: python benchmarks/strategy_rerun.py        (after python benchmarks/train_strategies.py)

The former table was produced by the former train_strategies.py, its own training loop over the same recipe (662ecee;
query-language negatives at db2299a), before the sampler kept false negatives out of batches. Its per-query values
are kept in benchmarks/results/train_strategies_former/ (qneg/ for query-language negatives); the rerun's are
train_strategies.perquery.csv.gz. Writes train_strategies.former.md: AP Mo / Cr / Mul and Mul rank distance per
(strategy, seed), former, rerun and the difference.
"""
from __future__ import annotations

import pandas as pd
from lareqa_table import HERE

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.evaluation.statistics import seed_macro_averages

RESULTS = HERE / 'results'
FORMER = RESULTS / 'train_strategies_former'
# former names are '<strategy>-s<seed>' and 'untrained'; the qneg run's 'hybrid' is the rerun's 'hybrid-qneg'
FORMER_FILES = {FORMER / 'train_strategies.perquery.csv.gz': '', FORMER / 'qneg' / 'train_strategies.perquery.csv.gz':
                '-qneg'}
COLUMNS = [('AP', 'Mo'), ('AP', 'Cr'), ('AP', 'Mul'), ('RankDistance', 'Mul')]


def former_perquery() -> pd.DataFrame:
    """The former runs' per-query values under the rerun's names and a seed column."""
    frames = []
    for path, suffix in FORMER_FILES.items():
        frame = pd.read_csv(path, dtype={'qid': str})
        if suffix:
            frame = frame[frame['name'] != 'untrained']  # the same untrained model as in the main file
        parts = frame['name'].str.extract(r'^(?P<strategy>.+?)(?:-s(?P<seed>\d+))?$')
        frames.append(frame.assign(name=parts['strategy'].replace({'untrained': 'mE5'}).where(
            parts['seed'].isna(), parts['strategy'] + suffix), seed=pd.to_numeric(parts['seed']).astype('Int64')))
    return pd.concat(frames, ignore_index=True)


def per_seed(perquery: pd.DataFrame) -> pd.DataFrame:
    """One row per (name, seed), one column per (measure, kind) of :data:`COLUMNS`."""
    table = seed_macro_averages(perquery).unstack(['measure', 'kind'])
    return table[[c for c in COLUMNS if c in table.columns]]


def main() -> None:
    rerun = pd.read_csv(RESULTS / 'train_strategies.perquery.csv.gz', dtype={'qid': str, 'seed': 'Int64'})
    former, now = per_seed(former_perquery()), per_seed(rerun)
    now = now.loc[former.index.intersection(now.index, sort=False)]
    table = pd.concat({'former': former.loc[now.index], 'rerun': now, 'difference': now - former.loc[now.index]},
                      axis=1)
    table.columns = [f'{part} {measure} {kind}' for part, measure, kind in table.columns]
    text = ('Macro averages per strategy and seed: the former table (train_strategies_former/) and its rerun from '
            'examples/strategy_study.yaml (train_strategies.perquery.csv.gz).\n\n'
            + table.reset_index().round(4).to_markdown(index=False) + '\n')
    write_atomically(RESULTS / 'train_strategies.former.md', lambda tmp: tmp.write_text(text))
    print(text)


if __name__ == '__main__':
    main()
