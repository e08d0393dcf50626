"""Encoding throughput and memory: HybridEncoder (fp32, int8) vs SentenceTransformer.encode vs pyterrier-dr's E5;
and search time per query: FAISS exact inner product vs a numpy brute-force dot product over the same vectors.

Usage: python benchmarks/encode_speed.py [--model PATH] [--sample 2000] [--batch-size 32] [--repeats 3]

Every encoder runs in its own process (so peak memory is its own) on the same seeded sample of XQuAD-R
candidates spanning all 11 languages, with the same batch size and thread count. Results go to
benchmarks/results/encode_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENCODERS = ('hybrid-fp32', 'sentence-transformers', 'pyterrier-dr-E5', 'hybrid-int8')


def sample_passages(size: int, seed: int = 0) -> list[str]:
    import ir_datasets

    import pyterrier_hybrid  # noqa: F401  (registers lareqa)
    docs = [d.text for d in ir_datasets.load('lareqa/xquad-r').docs_iter()]
    return [docs[i] for i in np.random.default_rng(seed).choice(len(docs), size=size, replace=False)]


def encode_with(name: str, model: str, texts: list[str], batch_size: int):
    """Returns (encode function, tokens counted as the encoder sees them)."""
    if name.startswith('hybrid'):
        from pyterrier_hybrid import HybridEncoder
        encoder = HybridEncoder.from_pretrained(model, batch_size=batch_size, quantize=name.endswith('int8'))
        return encoder.encode_docs
    if name == 'sentence-transformers':
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(model, device='cpu')
        return lambda t: st.encode(t, batch_size=batch_size, prompt_name='passage', normalize_embeddings=True)
    import pyterrier_dr
    e5 = pyterrier_dr.E5(model, batch_size=batch_size, device='cpu')
    return e5.encode_docs


def measure_encoder(name: str, model: str, size: int, batch_size: int, repeats: int) -> dict:
    import torch
    from transformers import AutoTokenizer
    texts = sample_passages(size)
    tokens = sum(len(ids) for ids in AutoTokenizer.from_pretrained(model)(['passage: ' + t for t in texts],
                                                                           truncation=True)['input_ids'])
    encode = encode_with(name, model, texts, batch_size)
    encode(texts[:64])  # warm-up
    times, vectors = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = np.asarray(encode(texts), dtype=np.float32)
        times.append(time.perf_counter() - start)
    best = min(times)
    np.save(HERE / 'results' / f'.vectors-{name}.npy', vectors)
    return {'encoder': name, 'passages': len(texts), 'tokens': tokens, 'seconds': round(best, 2),
            'seconds_all': [round(t, 2) for t in times], 'passages_per_s': round(len(texts) / best, 1),
            'tokens_per_s': round(tokens / best, 1), 'threads': torch.get_num_threads(), 'batch_size': batch_size,
            'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def measure_search(doc_vecs: np.ndarray, query_vecs: np.ndarray, k: int = 100, repeats: int = 3) -> dict:
    import faiss
    index = faiss.IndexFlatIP(doc_vecs.shape[1])
    index.add(doc_vecs)

    def numpy_search():
        scores = query_vecs @ doc_vecs.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)

    timings = {}
    for name, search in [('faiss_flat', lambda: index.search(query_vecs, k)[1]), ('numpy', numpy_search)]:
        best = min(_timed(search) for _ in range(repeats))
        timings[f'{name}_ms_per_query'] = round(1000 * best / len(query_vecs), 3)
    same = np.mean([set(a) == set(b) for a, b in zip(index.search(query_vecs, k)[1], numpy_search())])
    return {'docs': len(doc_vecs), 'queries': len(query_vecs), 'k': k, **timings, 'same_top_k': float(same)}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model')
    parser.add_argument('--sample', type=int, default=2000)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--only', help=argparse.SUPPRESS)  # run one encoder in this process
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from lareqa_table import offline_model
    model = args.model or offline_model('multilingual-e5-small')
    if args.only:
        print(json.dumps(measure_encoder(args.only, model, args.sample, args.batch_size, args.repeats)))
        return

    (HERE / 'results').mkdir(exist_ok=True)
    rows = []
    for name in ENCODERS:
        command = [sys.executable, __file__, '--only', name, '--model', model, '--sample', str(args.sample),
                   '--batch-size', str(args.batch_size), '--repeats', str(args.repeats)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    reference = np.load(HERE / 'results' / '.vectors-sentence-transformers.npy')
    st_speed = next(r['passages_per_s'] for r in rows if r['encoder'] == 'sentence-transformers')
    for row in rows:
        vectors = np.load(HERE / 'results' / f'.vectors-{row["encoder"]}.npy')
        row['min_cosine_to_st'] = round(float((vectors * reference).sum(1).min()), 5)
        row['speedup_vs_st'] = round(row['passages_per_s'] / st_speed, 2)
    for path in (HERE / 'results').glob('.vectors-*.npy'):
        path.unlink()

    rng = np.random.default_rng(0)
    searches = []
    cached = HERE.parent / 'runs' / 'mE5-small' / 'xquad-r'
    if (cached / 'docs.index').exists():
        from pyterrier_hybrid import DenseIndex
        docs = np.asarray(DenseIndex(cached / 'docs.index').payload(return_docnos=False)[0])
        queries = np.asarray(DenseIndex(cached / 'queries.index').payload(return_docnos=False)[0])[:1190]
        searches.append({'corpus': 'XQuAD-R pooled (real mE5 vectors)', **measure_search(docs, queries)})
    synthetic = rng.normal(size=(200_000, 384)).astype(np.float32)
    searches.append({'corpus': 'synthetic 200k x 384',
                     **measure_search(synthetic, rng.normal(size=(256, 384)).astype(np.float32))})
    result = {'model': model, 'encoders': rows, 'search': searches}
    (HERE / 'results' / 'encode_speed.json').write_text(json.dumps(result, indent=1) + '\n')
    import pandas as pd
    markdown = (pd.DataFrame(rows).drop(columns=['seconds_all']).to_markdown(index=False) + '\n\n'
                + pd.DataFrame(searches).to_markdown(index=False) + '\n')
    (HERE / 'results' / 'encode_speed.md').write_text(markdown)
    print(markdown)


if __name__ == '__main__':
    main()
