"""One training variant, one seed: what moves Mo, Mul and rank distance (the search behind train_strategies).

Usage: python benchmarks/train_ablation.py NAME [--strategy hybrid] [--steps 40] [--batch-size 16]
       [--learning-rate 5e-5] [--temperature 0.01] [--negative-language passage] [--no-freeze-embeddings]

Trains multilingual-e5-small on MLQA-R with the given recipe, evaluates it zero-shot on all 132 XQuAD-R settings
(full rankings, AP and rank distance), prints the Mo / Cr / Mul row and appends it, with the recipe and the
training time, to benchmarks/results/train_ablation.jsonl. Single seeds: a difference below the seed spread of
train_strategies (Mul std ~0.01, rank distance std ~15-25) is not a finding.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ir_measures import AP
from lareqa_table import HERE, add_recipe_arguments, offline_model, recipe_of

import pyterrier_hybrid as ph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('name')
    parser.add_argument('--strategy', default='hybrid')
    add_recipe_arguments(parser)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--work', default=str(HERE.parent / 'runs' / 'train_ablation'))
    args = parser.parse_args()
    work = Path(args.work)
    recipe = {'strategy': args.strategy, 'seed': args.seed, **recipe_of(args)}
    start = time.perf_counter()
    target = ph.train(offline_model('multilingual-e5-small'), 'lareqa/mlqa-r', work / args.name,
                      save_steps=10 ** 6, **recipe)
    train_s = round(time.perf_counter() - start, 1)
    encoder = ph.HybridEncoder.from_pretrained(target, batch_size=32)
    system = ph.PooledDenseRetrieval(encoder, 'lareqa/xquad-r', work / 'encodings' / args.name)
    perquery = ph.evaluate_pooled({args.name: system}, ph.lareqa_settings('xquad-r'), [AP, ph.RankDistance])
    table = ph.macro_average_perquery(perquery).iloc[0]
    row = {'name': args.name, **recipe, 'train_s': train_s,
           **{f'{measure} {kind}': round(float(value), 4) for (measure, kind), value in table.items()
              if measure != 'RankDistance' or kind == 'Mul'}}
    with open(HERE / 'results' / 'train_ablation.jsonl', 'a') as f:
        f.write(json.dumps(row) + '\n')
    print(json.dumps(row))


if __name__ == '__main__':
    main()
