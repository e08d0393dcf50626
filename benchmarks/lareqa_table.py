"""The Mo / Cr / Mul table of an encoder on LAReQA, from one encoding pass per collection.

Usage: python benchmarks/lareqa_table.py [--model PATH] [--collections xquad-r mlqa-r] [--quantize]

Encodes each pooled corpus and its questions once (cached under --work), evaluates every Mo, Cr and Mul setting
with pt.Experiment over full rankings (nDCG@10, AP, R@100, rank distance), and writes per-setting rows and the
macro-averaged table to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import pyterrier_hybrid as ph
from pyterrier_hybrid.evaluation.measures import mul_only

HERE = Path(__file__).resolve().parent


def offline_model(name: str) -> str:
    """The path of a model built by ../shared/tools/offline-models."""
    tool = HERE.parent.parent / 'shared' / 'tools' / 'offline-models'
    lines = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout.split()
    return dict(line.split('=', 1) for line in lines)[name]


def setting_languages(query_lang: str, doc_lang: str) -> set[str]:
    """The languages a setting involves: its query and corpus languages (Mul's pooled corpus counts as none)."""
    return {query_lang} | ({doc_lang} if doc_lang != 'all' else set())


def training_data(spec) -> str:
    """The data set the file's trained models learn from (one per file)."""
    return next(m.data for m in spec.models.values() if m.recipe)


def coverage_of(spec):
    """``coverage(query_lang, doc_lang)``: which languages a setting involves (Mul: the query's) for the file's
    trained models: all seen in their training data, some only in a lexicon one of them code-switches with, or
    some in neither."""
    from pyterrier_hybrid.data.code_switching import lexicon_pair
    trained = set(ph.lareqa.COLLECTIONS[training_data(spec).split('/')[1]])
    lexicon = {lexicon_pair(path)[1] for m in spec.models.values() if m.recipe and m.recipe.code_switching
               for path in m.recipe.code_switching.lexicons}

    def coverage(query_lang: str, doc_lang: str) -> str:
        languages = setting_languages(query_lang, doc_lang)
        if languages <= trained:
            return 'seen in training'
        return 'lexicon, not training' if languages <= trained | lexicon else 'neither'
    return coverage


def report_of(spec, perquery):
    """The experiment report of ``perquery`` (which may hold a subset of the experiment's settings) on the file's
    data set, and that data set's name."""
    from pyterrier_hybrid.experiment.report import Report
    dataset = spec.datasets[0]
    return Report.from_spec(spec, perquery, {dataset: list(perquery['dataset_id'].unique())}), dataset


def keep_report(results: Path, out: Path) -> None:
    """Copy the runner's self-contained report and rank-distance charts from ``results`` (git-ignored) into
    ``out``, which is kept."""
    from pyterrier_hybrid.atomic import write_atomically
    out.mkdir(parents=True, exist_ok=True)
    for path in [results / 'report.html', *sorted(results.glob('rank_distance_*.png'))]:
        write_atomically(out / path.name, lambda tmp, path=path: tmp.write_bytes(path.read_bytes()))


def summary_markdown(spec, perquery) -> str:
    """The experiment report's Mo / Cr / Mul table (mean ± std over seeds, * against the baseline, best in bold) of
    ``perquery``, which may hold a subset of the experiment's settings."""
    report, dataset = report_of(spec, perquery)
    return report.summary_markdown(dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', help='checkpoint path (default: the offline multilingual-e5-small)')
    parser.add_argument('--name', default='mE5-small')
    parser.add_argument('--collections', nargs='+', default=['xquad-r', 'mlqa-r'])
    parser.add_argument('--quantize', action='store_true',
                        help='int8 CPU inference, measured even where the bias gate refuses it (its sample figures '
                             'are stored and later loads are still refused): this table is the full-size check')
    parser.add_argument('--fast', action='store_true',
                        help='evaluate_pooled (the same values from score matrices) instead of pt.Experiment')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--work', default=str(HERE.parent / 'runs'), help='where encodings are cached')
    parser.add_argument('--out', default=str(HERE / 'results'))
    args = parser.parse_args()

    model = args.model or offline_model('multilingual-e5-small')
    unbounded = ph.BiasGate(ap_tolerance=float('inf'), rd_tolerance=float('inf'))
    encoder = ph.HybridEncoder.from_pretrained(model, batch_size=args.batch_size, quantize=args.quantize,
                                               verbose=True, gate=unbounded)
    name = args.name + ('-int8' if args.quantize else '')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    measures = [*ph.DEFAULT_MEASURES, ph.RankDistance]
    for collection in args.collections:
        timings = {}
        start = time.perf_counter()
        system = ph.PooledDenseRetrieval(encoder, f'lareqa/{collection}', Path(args.work) / name / collection)
        timings['encode_s'] = time.perf_counter() - start
        start = time.perf_counter()
        if args.fast:
            perquery = ph.evaluate_pooled({name: system}, ph.lareqa_settings(collection), measures)
            results = perquery.pivot_table(index=['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang'],
                                           columns='measure', values='value').reset_index()
        else:
            results = ph.evaluate_settings({name: system}, ph.lareqa_settings(collection), measures)
        timings['evaluate_s'] = time.perf_counter() - start
        stem = out / f'lareqa_{collection}_{name}'
        results.to_csv(f'{stem}.settings.csv', index=False)
        table = ph.macro_average(results, measures=[ph.DEFAULT_MEASURES[1], *ph.DEFAULT_MEASURES[::2], ph.RankDistance])
        table = table.drop(columns=[(m, kind) for m, kind in table.columns if mul_only(m) and kind != 'Mul'])
        table.to_csv(f'{stem}.table.csv')
        Path(f'{stem}.table.md').write_text(table.round(4).to_markdown() + '\n')
        meta = {'model': model, 'collection': collection, 'quantize': args.quantize, 'batch_size': args.batch_size,
                'evaluator': 'evaluate_pooled' if args.fast else 'pt.Experiment',
                'threads': os.cpu_count(), **{k: round(v, 1) for k, v in timings.items()}}
        Path(f'{stem}.meta.json').write_text(json.dumps(meta, indent=1) + '\n')
        print(collection, meta)
        print(table.round(4).to_markdown())


if __name__ == '__main__':
    main()
