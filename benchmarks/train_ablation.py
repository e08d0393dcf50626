"""One training change at a time, one seed: the report of examples/train_ablation.yaml.

Usage: python benchmarks/train_ablation.py [--experiment examples/train_ablation.yaml]

Runs the file with the package's experiment runner (cached under its output folder) and writes
benchmarks/results/train_ablation.md: AP and nDCG@10 Mo / Cr / Mul, Mul rank distance and the training time of each
variant. One seed each: a difference below the strategy study's seed spread is not a finding.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lareqa_table import HERE, summary_markdown

import pyterrier_hybrid as ph
from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.experiment.runner import ExperimentRunner

EXPERIMENT = HERE.parent / 'examples' / 'train_ablation.yaml'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--experiment', default=str(EXPERIMENT))
    args = parser.parse_args()
    spec = ph.load_experiment(args.experiment)
    runner = ExperimentRunner(spec)
    runner.run()
    trained = [m for m in spec.models.values() if m.recipe is not None]
    seconds = ', '.join(f'{m.name} {ph.read_training_record(runner.model_path(m))["train_seconds"]:.0f} s'
                        for m in trained)
    markdown = (f'Experiment {Path(args.experiment).name}, one seed per variant (seed 1)\n\n'
                f'{summary_markdown(spec, runner.evaluate())}\n\nTraining time: {seconds}\n')
    write_atomically(HERE / 'results' / 'train_ablation.md', lambda tmp: tmp.write_text(markdown))
    print(markdown)


if __name__ == '__main__':
    main()
