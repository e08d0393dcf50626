"""Translation throughput of Seq2SeqTranslator: one text per generate call vs batches in arrival order vs
length-sorted batches, on the same real English XQuAD-R QA pairs and the same model, in one run.

Usage: python benchmarks/translate_speed.py [--items 100] [--batch-size 32] [--d-model 256] [--layers 2] [--repeats 3]

The model is the tests' tiny randomly initialised Marian model (tests/tiny_marian.py, BPE tokenizer trained on
the texts), made larger so that compute, not Python overhead, dominates. Random weights rarely emit EOS, so
every text decodes to its full output budget (2 x input tokens + 8): a batch costs as many decoding steps as its
longest member needs, which is what length sorting saves. Items/s counts QA pairs (question + answer sentence)
translated en->de. Results go to benchmarks/results/translate_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'tests'))

from tiny_marian import build_tiny_marian  # noqa: E402

from pyterrier_hybrid import Seq2SeqTranslator, lareqa_items  # noqa: E402

CONFIGS = {  # name -> (batch size or None for the --batch-size argument, sort by length)
    'batch 1 (no batching)': (1, False),
    'batched, arrival order': (None, False),
    'batched, length-sorted': (None, True),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--items', type=int, default=100)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--max-length', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per configuration; the best counts')
    parser.add_argument('--d-model', type=int, default=256)
    parser.add_argument('--layers', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    items = lareqa_items('xquad-r', ['en'])[:args.items]
    texts = [t for item in items for t in (item.query, item.positive)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_marian(Path(tmp) / 'opus-mt-en-de', texts, d_model=args.d_model, layers=args.layers)
        translators = {name: Seq2SeqTranslator(model, batch_size=batch_size or args.batch_size,
                                               max_length=args.max_length, sort_by_length=sort, device='cpu')
                       for name, (batch_size, sort) in CONFIGS.items()}
        seconds = {name: [] for name in CONFIGS}
        outputs = {}
        for name, translator in translators.items():
            translator(texts[:8], 'en', 'de')  # warm-up (model load)
        for _ in range(args.repeats):  # configurations interleaved, so a busy spell slows all of them alike
            for name, translator in translators.items():
                start = time.perf_counter()
                translator.decoder_steps = translator.input_tokens = 0
                outputs[name] = translator(texts, 'en', 'de')
                seconds[name].append(time.perf_counter() - start)
                print(name, round(seconds[name][-1], 2), flush=True)
    reference = outputs[next(iter(CONFIGS))]
    for name, (batch_size, sort) in CONFIGS.items():
        best = min(seconds[name])
        results.append({'config': name, 'batch_size': batch_size or args.batch_size, 'sorted': sort,
                        'seconds_best': round(best, 2), 'seconds_all': [round(t, 2) for t in seconds[name]],
                        'items_per_s': round(len(items) / best, 2), 'texts_per_s': round(len(texts) / best, 2),
                        'decoder_steps': translators[name].decoder_steps,
                        'padded_input_tokens': translators[name].input_tokens,
                        'same_output_as_batch_1': outputs[name] == reference})
    base = results[0]['items_per_s']
    for row in results:
        row['speedup_vs_batch_1'] = round(row['items_per_s'] / base, 2)
    setup = {'items': len(items), 'texts': len(texts), 'max_length': args.max_length, 'd_model': args.d_model,
             'layers': args.layers, 'threads': args.threads, 'repeats': args.repeats, 'pair': 'en->de',
             'data': 'XQuAD-R English'}
    out = HERE / 'results'
    (out / 'translate_speed.json').write_text(json.dumps({'setup': setup, 'results': results}, indent=1))
    lines = [f'Tiny Marian (d_model {args.d_model}, {args.layers}+{args.layers} layers, random weights), '
             f'{len(items)} XQuAD-R English QA pairs ({len(texts)} texts) en->de, max length {args.max_length}, '
             f'{args.threads} thread{"s" * (args.threads > 1)}, best of {args.repeats} interleaved runs.', '',
             '| configuration | batch | items/s | texts/s | speed-up vs batch 1 | decoder steps (all batches) | '
             'padded input tokens | same output as batch 1 |',
             '|---|---:|---:|---:|---:|---:|---:|---|']
    lines += [f'| {r["config"]} | {r["batch_size"]} | {r["items_per_s"]:.2f} | {r["texts_per_s"]:.2f} | '
              f'{r["speedup_vs_batch_1"]:.2f}x | {r["decoder_steps"]:,} | {r["padded_input_tokens"]:,} | '
              f'{"yes" if r["same_output_as_batch_1"] else "no"} |' for r in results]
    (out / 'translate_speed.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
