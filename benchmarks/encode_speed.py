"""CPU encoding: every sentence-transformers configuration a user would pick vs every HybridEncoder backend.

Usage: python benchmarks/encode_speed.py [--model PATH] [--sample 2000] [--batch-size 32] [--threads 2]
           [--repeats 3] [--quality none|int8|all] [--only NAME,...] [--st-python PYTHON]

On one seeded sample of XQuAD-R candidate sentences spanning all 11 languages, each configuration runs in its own
process (so its peak memory is its own) with the same batch size and threads, best of ``--repeats``, after its
export (cached) and a warm-up. Reported: passages/s, peak RSS, cosine to sentence-transformers torch fp32 (min and
mean), the bias gate's figures for the int8 rows and the reference (Mul AP and rank distance on its held-out
XQuAD-R sample, pyterrier_hybrid.retrieval.gate, from each row's own vectors), and with ``--quality`` XQuAD-R
Mo / Cr / Mul AP and rank distance on all 132 settings (``int8``: the int8 rows and the reference; ``all``: every
row). Each such row also encodes the pooled corpus and all questions, and this process scores the vectors with
pyterrier_hybrid's exact evaluation over full rankings, sentence-transformers' rows as this package's; per-setting
values go to encode_speed.settings.{csv,md}).

sentence-transformers' ONNX / OpenVINO backends need Optimum, whose releases pin transformers below what this
package runs on (optimum-onnx: < 4.58; optimum-intel: < 5.6). ``--st-python`` runs those rows with another
environment's interpreter (one where ``sentence-transformers[onnx]`` installs: scripts/st-backends-venv builds it);
its versions are recorded in each row. Optimum's model classes take no ``model_args``, which mE5's checkpoint sets
(``add_pooling_layer: false``), so those rows load a copy of the checkpoint without them (in --work; the user's
checkpoint is not edited). Without ``--st-python`` they run here, and a row that cannot says why.
Results: benchmarks/results/encode_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import contextlib
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


def onnx_quantization_config() -> str:
    """sentence-transformers' ONNX int8 configuration for this CPU (its documentation: arm64, avx2, avx512 or
    avx512_vnni, the best the CPU has)."""
    import platform
    if platform.machine() in ('aarch64', 'arm64'):
        return 'arm64'
    flags = set(Path('/proc/cpuinfo').read_text().split()) if Path('/proc/cpuinfo').exists() else set()
    return next((name for name, flag in [('avx512_vnni', 'avx512_vnni'), ('avx512', 'avx512f')] if flag in flags),
                'avx2')


def st_checkpoint(model: str, work: Path) -> str:
    """The checkpoint without ``model_args`` in sentence_bert_config.json (a copy in ``work`` if it has any)."""
    import shutil
    config = Path(model) / 'sentence_bert_config.json'
    if not config.is_file() or 'model_args' not in json.loads(config.read_text()):
        return model
    import hashlib
    files = sorted(f for f in Path(model).iterdir() if f.is_file())
    stamp = hashlib.sha256(repr([(str(Path(model).resolve()), f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                 for f in files]).encode()).hexdigest()[:12]
    copy = work / f'st-checkpoint-{stamp}'  # a new or re-saved checkpoint gets a fresh copy (and fresh exports)
    if not copy.exists():
        shutil.copytree(model, copy, ignore=shutil.ignore_patterns('onnx', 'openvino', '*.hybrid-*'))
        settings = json.loads(config.read_text())
        del settings['model_args']
        (copy / config.name).write_text(json.dumps(settings, indent=2))
    return str(copy)


def load_sentence_transformers(model: str, backend: str, int8: bool, calibration: list[str]):
    """The way sentence-transformers' documentation says to: backend=..., then its exporters for int8."""
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(model, device='cpu', backend=backend)
    if not int8:
        return st
    if backend == 'onnx':
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model
        config = onnx_quantization_config()
        export_dynamic_quantized_onnx_model(st, config, model)
        exported, = Path(model).glob(f'onnx/model_*int8_{config}.onnx')  # qint8, or quint8 for avx2
        return SentenceTransformer(model, device='cpu', backend='onnx',
                                   model_kwargs={'file_name': str(exported.relative_to(model))})
    from datasets import Dataset
    from sentence_transformers.backend import export_static_quantized_openvino_model
    with tempfile.TemporaryDirectory() as local:  # the Hub's glue/sst2 default is out of reach: XQuAD-R text
        Dataset.from_dict({'text': calibration}).to_json(f'{local}/train.jsonl')
        export_static_quantized_openvino_model(st, None, model, dataset_name=local, dataset_config_name='default',
                                               dataset_split='train', column_name='text')
    return SentenceTransformer(model, device='cpu', backend='openvino',
                               model_kwargs={'file_name': 'openvino/openvino_model_qint8_quantized.xml'})


def load(name: str, model: str, batch_size: int, calibration: list[str]):
    """(encode passages, encode queries) of one configuration."""
    library, backend, int8 = CONFIGURATIONS[name]
    if library == 'hybrid':
        from pyterrier_hybrid import HybridEncoder
        encoder = HybridEncoder.from_pretrained(model, batch_size=batch_size, device='cpu', backend=backend,
                                                quantize=int8)
        return encoder.encode_docs, encoder.encode_queries
    st = load_sentence_transformers(model, backend, int8, calibration)

    def encode(prompt: str):
        prompt = prompt if prompt in (st.prompts or {}) else None
        return lambda texts: st.encode(texts, batch_size=batch_size, prompt_name=prompt, normalize_embeddings=True,
                                       convert_to_numpy=True)
    return encode('passage'), encode('query')


def pooled_texts() -> dict:
    """XQuAD-R's pooled corpus and all its questions: ids and texts, for every configuration to encode."""
    import ir_datasets

    import pyterrier_hybrid  # noqa: F401  (registers lareqa)
    dataset = ir_datasets.load('lareqa/xquad-r')
    docs, queries = list(dataset.docs_iter()), list(dataset.queries_iter())
    return {'doc_ids': [d.doc_id for d in docs], 'docs': [d.text for d in docs],
            'query_ids': [q.query_id for q in queries], 'queries': [q.text for q in queries]}


def quality(name: str, pooled: dict, scratch: Path) -> dict | None:
    """XQuAD-R AP and rank distance of one row's pooled vectors (None if it encoded none) averaged per kind;
    the per-setting values go to ``scratch/settings-NAME.csv``."""
    files = [scratch / f'pooled-{side}-{name}.npy' for side in ('docs', 'queries')]
    if not all(f.is_file() for f in files):
        return None
    from pyterrier_hybrid import PooledVectors, RankDistance, evaluate_pooled, lareqa_settings
    from pyterrier_hybrid.evaluation.measures import AP, mul_only
    system = PooledVectors.of(pooled['doc_ids'], np.load(files[0]), pooled['query_ids'], np.load(files[1]))
    perquery = evaluate_pooled({name: system}, lareqa_settings('xquad-r'), [AP, RankDistance])
    perquery = perquery[~perquery['measure'].map(mul_only) | (perquery['kind'] == 'Mul')]
    by_setting = perquery.groupby(['kind', 'dataset_id', 'measure'])['value'].mean()
    by_setting.rename('value').reset_index().assign(configuration=name).to_csv(
        scratch / f'settings-{name}.csv', index=False)
    by_kind = by_setting.groupby(['kind', 'measure']).mean()
    return {f'{measure} {kind}': round(float(value), 4) for (kind, measure), value in by_kind.items()}


def measure(name: str, model: str, texts_file: Path, batch_size: int, repeats: int, pooled_file: Path | None,
            with_gate: bool) -> dict:
    import torch
    texts = json.loads(texts_file.read_text())
    passages = texts['passages']
    start = time.perf_counter()
    encode, encode_queries = load(name, model, batch_size, texts['calibration'])
    load_s = time.perf_counter() - start
    if with_gate:  # the bias gate's held-out sample, for the parent to score every row the same way
        np.save(texts_file.parent / f'gate-queries-{name}.npy', encode_queries(texts['gate_queries']))
        np.save(texts_file.parent / f'gate-docs-{name}.npy', encode(texts['gate_docs']))
    encode(passages[:64])  # warm-up
    times, vectors = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = np.asarray(encode(passages), dtype=np.float32)
        times.append(time.perf_counter() - start)
    np.save(texts_file.parent / f'vectors-{name}.npy', vectors)
    best = min(times)
    row = {'configuration': name, 'passages': len(passages), 'passages_per_s': round(len(passages) / best, 1),
           'seconds': round(best, 2), 'seconds_all': [round(t, 2) for t in times], 'load_s': round(load_s, 1),
           'threads': torch.get_num_threads(), 'batch_size': batch_size,
           'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           'versions': versions(), 'measured_at': time.strftime('%Y-%m-%d %H:%M')}  # --only merges runs
    if pooled_file is not None:  # after the timing, for the parent to score
        pooled = json.loads(pooled_file.read_text())
        np.save(texts_file.parent / f'pooled-docs-{name}.npy', encode(pooled['docs']))
        np.save(texts_file.parent / f'pooled-queries-{name}.npy', encode_queries(pooled['queries']))
    return row


def versions() -> str:
    """The versions that decide a row's speed, as this process sees them."""
    from importlib.metadata import PackageNotFoundError, version
    found = []
    for package in ('torch', 'transformers', 'sentence-transformers', 'onnxruntime', 'openvino', 'optimum-onnx',
                    'optimum-intel'):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f'{package} {version(package)}')
    return ', '.join(found)


def run_one(name: str, args: argparse.Namespace, model: str, texts_file: Path, pooled_file: Path) -> dict:
    """One configuration in a fresh process with ``args.threads`` threads; a failure becomes the row's reason."""
    library, backend, int8 = CONFIGURATIONS[name]
    python = args.st_python if library == 'st' and backend != 'torch' and args.st_python else sys.executable
    if python != sys.executable:
        model = st_checkpoint(model, Path(args.work))
    command = [python, __file__, '--child', '--only', name, '--model', model, '--texts', str(texts_file),
               '--batch-size', str(args.batch_size), '--repeats', str(args.repeats), '--threads', str(args.threads)]
    compared = int8 or name == REFERENCE  # the rows the bias gate compares
    command += ['--pooled', str(pooled_file)] if args.quality == 'all' or (args.quality == 'int8' and compared) else []
    command += ['--gate'] if compared else []
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
    parser.add_argument('--quality', choices=('none', 'int8', 'all'), default='none',
                        help='XQuAD-R Mo/Cr/Mul AP and rank distance on all 132 settings too: none, for the int8 '
                             'rows and the reference, or for all rows (one encoding of the pooled corpus and '
                             'questions per row)')
    parser.add_argument('--only', help='comma-separated configurations (default: all); their rows replace those of '
                        'the earlier results (the reference is always measured again)')
    parser.add_argument('--st-python', help="interpreter of an environment with sentence-transformers' ONNX and "
                        'OpenVINO backends, for those rows (default: this one)')
    parser.add_argument('--work', default=str(HERE.parent / 'runs' / 'encode_speed'),
                        help='the checkpoint copy for --st-python')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)  # measure --only here
    parser.add_argument('--texts', type=Path, help=argparse.SUPPRESS)  # the child's passages and calibration
    parser.add_argument('--gate', action='store_true', help=argparse.SUPPRESS)  # encode the gate's sample too
    parser.add_argument('--pooled', type=Path, help=argparse.SUPPRESS)  # encode XQuAD-R's pooled texts too
    args = parser.parse_args()
    names = args.only.split(',') if args.only else list(CONFIGURATIONS)
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        parser.error(f'unknown configuration(s) {unknown}; choose from {", ".join(CONFIGURATIONS)}')
    if args.child:
        import torch
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(names[0], args.model, args.texts, args.batch_size, args.repeats,
                                 args.pooled, args.gate)))
        return

    sys.path.insert(0, str(HERE))
    import pandas as pd
    from lareqa_table import offline_model

    from pyterrier_hybrid.atomic import write_atomically
    from pyterrier_hybrid.retrieval.gate import BiasGate
    model = args.model or offline_model('multilingual-e5-small')
    run_settings = {'model': model, 'sample': args.sample, 'batch_size': args.batch_size, 'threads': args.threads,
                'repeats': args.repeats}
    earlier = HERE / 'results' / 'encode_speed.json'
    previous = json.loads(earlier.read_text()) if args.only and earlier.is_file() else None
    if previous is not None and {k: v for k, v in previous.items() if k != 'configurations'} != run_settings:
        parser.error(f'{earlier} was measured with other settings; rerun without --only')  # before measuring
    Path(args.work).mkdir(parents=True, exist_ok=True)
    (HERE / 'results').mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        texts_file, pooled_file = Path(scratch) / 'texts.json', Path(scratch) / 'pooled.json'
        pooled = pooled_texts() if args.quality != 'none' else None
        if pooled is not None:
            pooled_file.write_text(json.dumps(pooled))
        gate = BiasGate()
        texts_file.write_text(json.dumps({'passages': sample_passages(args.sample),
                                          'calibration': gate.calibration_texts(),
                                          'gate_queries': gate.sample.queries, 'gate_docs': gate.sample.docs}))
        rows = []
        for name in dict.fromkeys([REFERENCE, *names]):
            rows.append(run_one(name, args, model, texts_file, pooled_file))
            print(rows[-1], flush=True)
        reference_path = Path(scratch) / f'vectors-{REFERENCE}.npy'
        reference = np.load(reference_path) if reference_path.is_file() else None
        for row in rows:
            path = Path(scratch) / f'vectors-{row["configuration"]}.npy'
            if path.is_file() and reference is not None:
                cosine = (np.load(path) * reference).sum(1)
                row['min_cosine_to_st_torch'], row['mean_cosine_to_st_torch'] = (round(float(cosine.min()), 5),
                                                                                  round(float(cosine.mean()), 5))
            gate_files = [Path(scratch) / f'gate-{side}-{row["configuration"]}.npy' for side in ('queries', 'docs')]
            if all(f.is_file() for f in gate_files) and 'unavailable' not in row:
                figures = gate.figures_of(*map(np.load, gate_files))
                row['gate Mul AP'], row['gate RD'] = round(figures['AP'], 4), round(figures['RankDistance'], 2)
            row.update((pooled and quality(row['configuration'], pooled, Path(scratch))) or {})
        settings = sorted(Path(scratch).glob('settings-*.csv'))
        if settings:
            table = pd.concat([pd.read_csv(path) for path in settings], ignore_index=True)
            kept = HERE / 'results' / 'encode_speed.settings.csv'
            if args.only and kept.is_file():  # a partial rerun keeps the other configurations' values
                earlier = pd.read_csv(kept)
                table = pd.concat([earlier[~earlier['configuration'].isin(table['configuration'])], table])
            write_atomically(kept, lambda tmp: table.to_csv(tmp, index=False))
            wide = table.pivot_table(index=['kind', 'dataset_id'], columns=['measure', 'configuration'],
                                     values='value').round(4)  # one row per setting, the 132-setting table
            wide.columns = [f'{measure} {configuration}' for measure, configuration in wide.columns]
            write_atomically(kept.with_suffix('.md'),
                             lambda tmp: tmp.write_text(wide.reset_index().to_markdown(index=False) + '\n'))
    if previous is not None:  # a partial rerun replaces its rows in the earlier run's table
        fresh = {row['configuration']: row for row in rows}
        rows = [fresh.pop(row['configuration'], row) for row in previous['configurations']] + list(fresh.values())
    result = {**run_settings, 'configurations': rows}
    write_atomically(HERE / 'results' / 'encode_speed.json',
                     lambda tmp: tmp.write_text(json.dumps(result, indent=1) + '\n'))
    markdown = pd.DataFrame(rows).drop(columns=['seconds_all', 'versions'], errors='ignore').to_markdown(index=False)
    write_atomically(HERE / 'results' / 'encode_speed.md', lambda tmp: tmp.write_text(markdown + '\n'))
    print(markdown)


if __name__ == '__main__':
    main()
