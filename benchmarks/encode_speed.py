"""CPU encoding: every sentence-transformers configuration a user would pick vs every HybridEncoder backend.

Usage: python benchmarks/encode_speed.py [--model PATH] [--sample 2000] [--batch-size 32] [--threads 2]
                                         [--repeats 3] [--quality] [--only NAME,...]

On one seeded sample of XQuAD-R candidate sentences spanning all 11 languages, each configuration runs in its own
process (so its peak memory is its own) with the same batch size and threads, best of ``--repeats``, after its
export (cached) and a warm-up. Reported: passages/s, peak RSS, cosine to sentence-transformers torch fp32 (min and
mean), and with ``--quality`` XQuAD-R Mo / Cr / Mul AP and rank distance on all 132 settings (exact, over full
rankings). sentence-transformers' ONNX / OpenVINO configurations need Optimum (``sentence-transformers[onnx]``,
``[openvino]``); where it is not installed (its releases pin transformers < 5.6) the row says so.
Results: benchmarks/results/encode_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: name -> (library, backend, int8)
CONFIGURATIONS = {
    'st-torch': ('st', 'torch', False),
    'st-onnx': ('st', 'onnx', False),
    'st-onnx-int8': ('st', 'onnx', True),
    'st-openvino': ('st', 'openvino', False),
    'st-openvino-int8': ('st', 'openvino', True),
    'hybrid-torch': ('hybrid', 'torch', False),
    'hybrid-torch-int8': ('hybrid', 'torch', True),
    'hybrid-onnx': ('hybrid', 'onnx', False),
    'hybrid-onnx-int8': ('hybrid', 'onnx', True),
    'hybrid-openvino': ('hybrid', 'openvino', False),
    'hybrid-openvino-int8': ('hybrid', 'openvino', True),
}
REFERENCE = 'st-torch'


def sample_passages(size: int, seed: int = 0) -> list[str]:
    import ir_datasets

    import pyterrier_hybrid  # noqa: F401  (registers lareqa)
    docs = [d.text for d in ir_datasets.load('lareqa/xquad-r').docs_iter()]
    return [docs[i] for i in np.random.default_rng(seed).choice(len(docs), size=size, replace=False)]


def load_sentence_transformers(model: str, backend: str, int8: bool):
    """The way sentence-transformers' documentation says to: backend=..., then its exporters for int8."""
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(model, device='cpu', backend=backend)
    if not int8:
        return st
    if backend == 'onnx':
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model
        export_dynamic_quantized_onnx_model(st, 'avx512_vnni', model)
        return SentenceTransformer(model, device='cpu', backend='onnx',
                                   model_kwargs={'file_name': 'onnx/model_qint8_avx512_vnni.onnx'})
    from datasets import Dataset
    from sentence_transformers.backend import export_static_quantized_openvino_model

    from pyterrier_hybrid.retrieval.gate import BiasGate
    with tempfile.TemporaryDirectory() as local:  # the Hub's glue/sst2 default is out of reach: XQuAD-R text
        Dataset.from_dict({'text': BiasGate().calibration_texts()}).to_json(f'{local}/train.jsonl')
        export_static_quantized_openvino_model(st, None, model, dataset_name=local, dataset_config_name='default',
                                               dataset_split='train', column_name='text')
    return SentenceTransformer(model, device='cpu', backend='openvino',
                               model_kwargs={'file_name': 'openvino/openvino_model_qint8_quantized.xml'})


def load(name: str, model: str, batch_size: int):
    """(HybridEncoder for evaluation, encode function for timing) of one configuration."""
    from pyterrier_hybrid import HybridEncoder
    from pyterrier_hybrid.retrieval.encoder import EncoderConfig
    library, backend, int8 = CONFIGURATIONS[name]
    if library == 'hybrid':
        encoder = HybridEncoder.from_pretrained(model, batch_size=batch_size, device='cpu', backend=backend,
                                                quantize=int8)
        return encoder, encoder.encode_docs
    st = load_sentence_transformers(model, backend, int8)
    prompt = 'passage' if 'passage' in (st.prompts or {}) else None
    return (HybridEncoder(st, EncoderConfig.of(st), model_name=model, batch_size=batch_size),
            lambda texts: st.encode(texts, batch_size=batch_size, prompt_name=prompt, normalize_embeddings=True,
                                    convert_to_numpy=True))


def quality(encoder) -> dict:
    """XQuAD-R AP and rank distance averaged per kind, by pyterrier_hybrid's exact evaluation."""
    from pyterrier_hybrid import PooledDenseRetrieval, RankDistance, evaluate_pooled, lareqa_settings
    from pyterrier_hybrid.evaluation.measures import AP
    with tempfile.TemporaryDirectory() as path:
        system = PooledDenseRetrieval(encoder, 'lareqa/xquad-r', path)
        perquery = evaluate_pooled({'x': system}, lareqa_settings('xquad-r'), [AP, RankDistance])
    by_setting = perquery.groupby(['kind', 'dataset_id', 'measure'])['value'].mean()
    by_kind = by_setting.groupby(['kind', 'measure']).mean()
    return {f'{measure} {kind}': round(float(value), 4) for (kind, measure), value in by_kind.items()}


def measure(name: str, model: str, size: int, batch_size: int, repeats: int, with_quality: bool) -> dict:
    import torch
    texts = sample_passages(size)
    start = time.perf_counter()
    encoder, encode = load(name, model, batch_size)
    load_s = time.perf_counter() - start
    encode(texts[:64])  # warm-up
    times, vectors = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = np.asarray(encode(texts), dtype=np.float32)
        times.append(time.perf_counter() - start)
    np.save(HERE / 'results' / f'.vectors-{name}.npy', vectors)
    best = min(times)
    row = {'configuration': name, 'passages': len(texts), 'passages_per_s': round(len(texts) / best, 1),
           'seconds': round(best, 2), 'seconds_all': [round(t, 2) for t in times], 'load_s': round(load_s, 1),
           'threads': torch.get_num_threads(), 'batch_size': batch_size,
           'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return {**row, **(quality(encoder) if with_quality else {})}


def run_one(name: str, args: argparse.Namespace, model: str) -> dict:
    """One configuration in a fresh process with ``args.threads`` threads; a failure becomes the row's reason."""
    command = [sys.executable, __file__, '--child', '--only', name, '--model', model, '--sample', str(args.sample),
               '--batch-size', str(args.batch_size), '--repeats', str(args.repeats), '--threads', str(args.threads)]
    command += ['--quality'] if args.quality else []
    threads = str(args.threads)
    env = {**os.environ, 'OMP_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads, 'TOKENIZERS_PARALLELISM': 'false'}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    reason = (done.stderr.strip().splitlines() or ['exit status ' + str(done.returncode)])[-1]
    return {'configuration': name, 'unavailable': reason[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model')
    parser.add_argument('--sample', type=int, default=2000)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--quality', action='store_true', help='XQuAD-R Mo/Cr/Mul AP and rank distance too')
    parser.add_argument('--only', help='comma-separated configurations (default: all)')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)  # measure --only here
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from lareqa_table import offline_model
    model = args.model or offline_model('multilingual-e5-small')
    names = args.only.split(',') if args.only else list(CONFIGURATIONS)
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        parser.error(f'unknown configuration(s) {unknown}; choose from {", ".join(CONFIGURATIONS)}')
    (HERE / 'results').mkdir(exist_ok=True)
    if args.child:
        import torch
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(names[0], model, args.sample, args.batch_size, args.repeats, args.quality)))
        return

    rows = []
    for name in dict.fromkeys([REFERENCE, *names]):
        rows.append(run_one(name, args, model))
        print(rows[-1], flush=True)
    reference_path = HERE / 'results' / f'.vectors-{REFERENCE}.npy'
    reference = np.load(reference_path) if reference_path.is_file() else None
    for row in rows:
        path = HERE / 'results' / f'.vectors-{row["configuration"]}.npy'
        if path.is_file() and reference is not None:
            cosine = (np.load(path) * reference).sum(1)
            row['min_cosine_to_st_torch'], row['mean_cosine_to_st_torch'] = (round(float(cosine.min()), 5),
                                                                              round(float(cosine.mean()), 5))
        path.unlink(missing_ok=True)

    from pyterrier_hybrid.atomic import write_atomically
    result = {'model': model, 'sample': args.sample, 'batch_size': args.batch_size, 'threads': args.threads,
              'repeats': args.repeats, 'configurations': rows}
    write_atomically(HERE / 'results' / 'encode_speed.json',
                     lambda tmp: tmp.write_text(json.dumps(result, indent=1) + '\n'))
    import pandas as pd
    markdown = pd.DataFrame(rows).drop(columns=['seconds_all'], errors='ignore').to_markdown(index=False) + '\n'
    write_atomically(HERE / 'results' / 'encode_speed.md', lambda tmp: tmp.write_text(markdown))
    print(markdown)


if __name__ == '__main__':
    main()
