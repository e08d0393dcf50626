"""X-X-mono vs X-Y vs hybrid batches, zero-shot: train on MLQA-R, evaluate on XQuAD-R (Mo / Cr / Mul).

Usage: python benchmarks/train_strategies.py [--steps 40] [--batch-size 16] [--max-length 64] [--seeds 1 2 3]

Every strategy gets the same budget (steps x batch size x max length, frozen word embeddings by default, since
they are most of mE5's 118M parameters and slow on a CPU). Each trained model and the untrained one encode
XQuAD-R once (PooledDenseRetrieval) and are evaluated on all 132 settings over full rankings with AP, nDCG@10
and rank distance (evaluate_pooled: pt.Experiment's values, from score matrices).
The table reports mean +- std over seeds; paired t-tests over (setting, query) pairs, Holm-corrected, compare
each strategy with the untrained model and with each other. Languages unseen in MLQA-R training (el, ru, th,
tr) are reported separately. Also measures training throughput against a plain sentence-transformers
MultipleNegativesRankingLoss run on the same model, data and batch size.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from ir_measures import AP, nDCG
from lareqa_table import HERE, add_recipe_arguments, offline_model, recipe_of, setting_languages
from transformers import TrainerCallback

import pyterrier_hybrid as ph

STRATEGIES = ('xx-mono', 'xy', 'hybrid')
TRAIN_LANGS = set(ph.lareqa.COLLECTIONS['mlqa-r'])


class StepClock(TrainerCallback):
    """Records when each training step ends, so the warm-up steps can be left out of the throughput."""

    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def throughput(model: str, args) -> dict:
    """Pairs per second: this package's trainer vs plain sentence-transformers MNRL, same model/data/batch.

    Both run ``throughput_steps`` steps; the first two (warm-up, allocation) are not timed."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    steps, out = args.throughput_steps, Path(args.work) / 'throughput'
    result = {}
    for name in ('plain-st-mnrl', 'pyterrier-hybrid', 'plain-st-mnrl (again)'):
        run = ph.build_trainer(model, 'lareqa/mlqa-r', out / name, steps=steps, batch_size=args.batch_size,
                               max_length=args.max_length, freeze_embeddings=args.freeze_embeddings,
                               save_steps=10 ** 6)
        trainer = run.trainer
        if name.startswith('plain'):
            plain_args = SentenceTransformerTrainingArguments(
                output_dir=str(out / name), max_steps=steps, per_device_train_batch_size=args.batch_size,
                learning_rate=2e-5, save_steps=10 ** 6, report_to='none', prompts=trainer.args.prompts,
                dataloader_drop_last=True, warmup_ratio=0.1, seed=42)
            trainer = SentenceTransformerTrainer(model=trainer.model, args=plain_args,
                                                 train_dataset=trainer.train_dataset,
                                                 loss=MultipleNegativesRankingLoss(trainer.model, scale=20.0))
        clock = StepClock()
        trainer.add_callback(clock)
        trainer.train()
        timed = clock.times[2:]
        result[name] = round((len(timed) - 1) * args.batch_size / (timed[-1] - timed[0]), 2)
    plain = (result['plain-st-mnrl'] + result['plain-st-mnrl (again)']) / 2
    result['ratio'] = round(result['pyterrier-hybrid'] / plain, 3)
    return result


def seen_in_training(query_lang: str, doc_lang: str) -> str:
    """'seen' when every language of a setting was in the training data (Mul: the query language)."""
    return 'seen' if setting_languages(query_lang, doc_lang) <= TRAIN_LANGS else 'unseen'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model')
    add_recipe_arguments(parser)
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    parser.add_argument('--strategies', nargs='+', default=list(STRATEGIES))
    parser.add_argument('--throughput-steps', type=int, default=10)
    parser.add_argument('--fresh', action='store_true', help='re-evaluate every model, ignoring the per-query '
                        'values an earlier run saved in --out (by default only models missing there run)')
    parser.add_argument('--work', default=str(HERE.parent / 'runs' / 'train_strategies'))
    parser.add_argument('--out', default=str(HERE / 'results'))
    args = parser.parse_args()
    model = args.model or offline_model('multilingual-e5-small')
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_of(args)
    budget = {**recipe, 'seeds': args.seeds, 'train': 'lareqa/mlqa-r', 'eval': 'lareqa/xquad-r'}
    saved = out / 'train_strategies.perquery.csv.gz'
    previous = pd.read_csv(saved, dtype={'qid': str}) if saved.exists() and not args.fresh else None
    done = set() if previous is None else set(previous['name'])  # models evaluated by an earlier run
    earlier = json.loads((out / 'train_strategies.json').read_text()) if previous is not None else {}
    same_budget = {k: v for k, v in budget.items() if k != 'seeds'}
    if earlier and {k: v for k, v in earlier['budget'].items() if k != 'seeds'} != same_budget:
        raise SystemExit(f'{saved} was made with another budget ({earlier["budget"]}); pass --fresh')
    timings = earlier.get('timings', {})
    checkpoints = {'untrained': model}
    for seed in args.seeds:
        for strategy in args.strategies:
            name = f'{strategy}-s{seed}'
            target = work / name
            if name in done:
                continue
            if not target.exists():
                start = time.perf_counter()
                ph.train(model, 'lareqa/mlqa-r', target, strategy=strategy, seed=seed,
                         save_steps=max(10, args.steps // 3), **recipe)
                timings[f'train {name} s'] = round(time.perf_counter() - start, 1)
            checkpoints[name] = target

    measures = [AP, nDCG @ 10, ph.RankDistance]
    systems = {}
    for name, path in checkpoints.items():
        if name in done:
            continue
        start = time.perf_counter()
        encoder = ph.HybridEncoder.from_pretrained(path, batch_size=32)
        systems[name] = ph.PooledDenseRetrieval(encoder, 'lareqa/xquad-r', work / 'encodings' / name)
        timings[f'encode {name} s'] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    perquery = ph.evaluate_pooled(systems, ph.lareqa_settings('xquad-r'), measures) if systems else None
    timings['evaluate s'] = round(time.perf_counter() - start, 1)
    perquery = pd.concat([previous, perquery], ignore_index=True)
    wanted = {'untrained'} | {f'{strategy}-s{seed}' for strategy in args.strategies for seed in args.seeds}
    perquery = perquery[perquery['name'].isin(wanted)]
    perquery.to_csv(saved, index=False)

    perquery['strategy'] = perquery['name'].str.replace(r'-s\d+$', '', regex=True)
    perquery['languages'] = [seen_in_training(q, d) for q, d in zip(perquery['query_lang'], perquery['doc_lang'])]
    sections = []
    for subset, frame in [('all languages', perquery), *perquery.groupby('languages')]:
        per_seed = ph.macro_average_perquery(frame).drop(columns=[('RankDistance', 'Mo'), ('RankDistance', 'Cr')])
        per_seed.index = pd.MultiIndex.from_arrays([per_seed.index.str.replace(r'-s\d+$', '', regex=True),
                                                    per_seed.index], names=['strategy', 'name'])
        summary = per_seed.groupby('strategy', sort=False).agg(['mean', 'std'])
        cells = pd.DataFrame(index=summary.index)
        for measure, kind in per_seed.columns:
            mean, std = summary[(measure, kind, 'mean')], summary[(measure, kind, 'std')].fillna(0)
            digits = 1 if measure == 'RankDistance' else 3
            cells[f'{measure} {kind}'] = [f'{m:.{digits}f} ± {s:.{digits}f}' for m, s in zip(mean, std)]
        sections.append(f'### {subset}\n\n{cells.to_markdown()}\n')
    tests = []
    strategies = ['untrained', *args.strategies]
    for i, baseline in enumerate(strategies):
        for measure in ('AP', 'RankDistance'):  # rank distance only means something in Mul (several relevant)
            by_strategy = perquery.assign(name=perquery['strategy'])
            by_strategy = by_strategy[by_strategy['name'].isin(strategies[i:])]
            # seeds averaged per query, so each test pairs one score per (setting, query) and strategy
            by_strategy = by_strategy.groupby(['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'qid',
                                               'measure'], as_index=False)['value'].mean()
            if by_strategy['name'].nunique() > 1:
                found = ph.paired_tests(by_strategy, baseline=baseline, measure=measure).assign(measure=measure)
                tests.append(found[found['kind'] == 'Mul'] if measure == 'RankDistance' else found)
    tests = pd.concat(tests, ignore_index=True)
    tests.to_csv(out / 'train_strategies.tests.csv', index=False)
    throughput_result = throughput(model, args) if args.throughput_steps else earlier.get('throughput', {})
    report = (f'Budget: {json.dumps(budget)}\n\n' + '\n'.join(sections) + '\n### paired t-tests (Holm)\n\n'
              + tests.round(4).to_markdown(index=False) + f'\n\nTraining throughput (pairs/s): {throughput_result}\n')
    (out / 'train_strategies.md').write_text(report)
    (out / 'train_strategies.json').write_text(json.dumps({'budget': budget, 'timings': timings,
                                                           'throughput': throughput_result}, indent=1) + '\n')
    print(report)


if __name__ == '__main__':
    main()
