"""X-X-mono vs X-Y vs hybrid batches, zero-shot: the report of examples/strategy_study.yaml.

Usage: python benchmarks/train_strategies.py [--experiment examples/strategy_study.yaml] [--throughput-steps 10]
       [--out benchmarks/results] [--tabulate]

The study itself (models, budget, seeds, data, measures) is the experiment file; this script runs it with the
package's experiment runner (everything cached under the file's output folder, so a second call only re-tabulates)
and adds what a general report does not know: the Mo / Cr / Mul table (mean +- std over seeds) for all languages and
separately for the settings whose languages the training data all saw, those that add only languages a model's
lexicons code-switch into, and the rest (MLQA-R training: el, ru, th, tr unseen), paired t-tests (seeds
averaged per query, Holm) of every strategy against the untrained model and against each other, and the training
throughput of this package's trainer against a plain sentence-transformers MultipleNegativesRankingLoss run on the
same model, data and batch size. Writes benchmarks/results/train_strategies.{md,json,perquery.csv.gz,tests.csv},
and beside them the runner's own report.html (heatmaps, difference maps, significance) and its rank-distance chart
per query language, which otherwise stay in the git-ignored output folder.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from lareqa_table import HERE, coverage_of, keep_report, report_of, summary_markdown
from transformers import TrainerCallback

import pyterrier_hybrid as ph
from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.evaluation.measures import mul_only
from pyterrier_hybrid.experiment.config import ExperimentSpec
from pyterrier_hybrid.experiment.runner import ExperimentRunner

EXPERIMENT = HERE.parent / 'examples' / 'strategy_study.yaml'


class StepClock(TrainerCallback):
    """Records when each training step ends, so the warm-up steps can be left out of the throughput."""

    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def throughput(model: str, recipe: ph.Recipe, steps: int, work: Path) -> dict:
    """Pairs per second: this package's trainer vs plain sentence-transformers MNRL, same model/data/batch.

    Both run ``steps`` steps; the first two (warm-up, allocation) are not timed."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    result = {}
    for name in ('plain-st-mnrl', 'pyterrier-hybrid', 'plain-st-mnrl (again)'):
        run = ph.build_trainer(model, 'lareqa/mlqa-r', work / name, recipe, steps=steps, save_steps=10 ** 6)
        trainer = run.trainer
        if name.startswith('plain'):
            plain_args = SentenceTransformerTrainingArguments(
                output_dir=str(work / name), max_steps=steps, per_device_train_batch_size=recipe.batch_size,
                learning_rate=2e-5, save_steps=10 ** 6, report_to='none', prompts=trainer.args.prompts,
                dataloader_drop_last=True, warmup_ratio=0.1, seed=42)
            trainer = SentenceTransformerTrainer(model=trainer.model, args=plain_args,
                                                 train_dataset=trainer.train_dataset,
                                                 loss=MultipleNegativesRankingLoss(trainer.model, scale=20.0))
        clock = StepClock()
        trainer.add_callback(clock)
        trainer.train()
        timed = clock.times[2:]
        result[name] = round((len(timed) - 1) * recipe.batch_size / (timed[-1] - timed[0]), 2)
    plain = (result['plain-st-mnrl'] + result['plain-st-mnrl (again)']) / 2
    result['ratio'] = round(result['pyterrier-hybrid'] / plain, 3)
    return result


def tests(perquery: pd.DataFrame) -> pd.DataFrame:
    """Each strategy against the untrained model and against every strategy listed after it (seeds averaged per
    query inside :func:`ph.paired_tests`; rank distance in Mul only)."""
    names, rows = list(perquery['name'].unique()), []
    for i, baseline in enumerate(names[:-1]):
        for measure in ('AP', 'RankDistance'):
            frame = perquery[perquery['name'].isin(names[i:])]
            if mul_only(measure):  # tested and corrected in Mul alone
                frame = frame[frame['kind'] == 'Mul']
            rows.append(ph.paired_tests(frame, baseline=baseline, measure=measure).assign(measure=measure))
    return pd.concat(rows, ignore_index=True)


def rank_distance_by_query_language(spec: ExperimentSpec, perquery: pd.DataFrame) -> pd.DataFrame | None:
    """The numbers of the runner's rank-distance chart (:meth:`Report.per_query_language`), one row per model; None
    for a study that does not measure rank distance (it has no chart either)."""
    report, dataset = report_of(spec, perquery)
    chart = report.per_query_language(dataset)
    return None if chart is None else chart[0].T.round(1).rename_axis(index='model', columns=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--experiment', default=str(EXPERIMENT), help='the study\'s experiment file')
    parser.add_argument('--throughput-steps', type=int, default=10, choices=[0, *range(4, 1000)], metavar='STEPS',
                        help='steps per throughput run, the first two untimed (0: keep the earlier figures)')
    parser.add_argument('--out', default=str(HERE / 'results'))
    parser.add_argument('--tabulate', action='store_true',
                        help='only re-tabulate the per-query values saved in --out (no training or encoding; the '
                             'recorded wall time and throughput are kept)')
    args = parser.parse_args()
    spec = ph.load_experiment(args.experiment)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    earlier = out / 'train_strategies.json'
    record = json.loads(earlier.read_text()) if earlier.exists() else {}
    saved = out / 'train_strategies.perquery.csv.gz'
    if args.tabulate:
        if not saved.exists() or 'wall_s' not in record:
            parser.error(f'--tabulate needs {saved} and {earlier} from a full run of the study')
        perquery, elapsed, speed = pd.read_csv(saved), record['wall_s'], record.get('throughput', {})
    else:
        start = time.perf_counter()
        runner = ExperimentRunner(spec)
        keep_report(runner.run(), out)  # trains, encodes, evaluates and writes the general report (cached)
        perquery = runner.evaluate()  # every seed of every model, from the cache run() filled
        elapsed = round(time.perf_counter() - start, 1)
        hybrid = next(m for m in spec.models.values() if m.recipe is not None and m.recipe.strategy == 'hybrid')
        speed = (throughput(runner.checkpoint(hybrid.base) if hasattr(hybrid.base, 'name') else hybrid.base,
                            hybrid.recipe, args.throughput_steps,
                            Path(spec.output) / 'throughput') if args.throughput_steps
                 else record.get('throughput', {}))
    coverage = coverage_of(spec)
    perquery['languages'] = [coverage(q, d) for q, d in zip(perquery['query_lang'], perquery['doc_lang'])]
    sections = [f'### {subset}\n\n{summary_markdown(spec, frame)}\n'
                for subset, frame in [('all languages', perquery), *perquery.groupby('languages')]]
    by_query_language = rank_distance_by_query_language(spec, perquery)
    if by_query_language is not None:
        sections.append('### rank distance per query language (Mul; mean over seeds)\n\n'
                        + by_query_language.to_markdown() + '\n')
    significance = tests(perquery)
    trained = [m for m in spec.models.values() if m.recipe is not None]
    budget = {'experiment': str(Path(args.experiment).name), 'seeds': spec.seeds, 'recipes': {
        m.name: m.recipe.to_dict() for m in trained}}
    report = (f'Experiment {budget["experiment"]}, seeds {spec.seeds}; recipes in train_strategies.json.\n\n'
              + '\n'.join(sections) + '\n### paired t-tests (seeds averaged per query, Holm)\n\n'
              + significance.round(4).to_markdown(index=False) + f'\n\nTraining throughput (pairs/s): {speed}\n')
    if not args.tabulate:
        write_atomically(saved, lambda tmp: perquery.drop(columns='languages').to_csv(tmp, index=False,
                                                                                     compression='gzip'))
    write_atomically(out / 'train_strategies.tests.csv', lambda tmp: significance.to_csv(tmp, index=False))
    write_atomically(out / 'train_strategies.md', lambda tmp: tmp.write_text(report))
    record = {**record, 'budget': budget, 'wall_s': elapsed, 'throughput': speed}
    write_atomically(out / 'train_strategies.json', lambda tmp: tmp.write_text(json.dumps(record, indent=1) + '\n'))
    print(report)


if __name__ == '__main__':
    main()
