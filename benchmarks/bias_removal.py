"""Training-free language-bias removal on XQuAD-R: every LanguageBiasRemoval variant over all 132 settings.

Usage: python benchmarks/bias_removal.py [--model PATH] [--name mE5-small] [--languages de th] [--k 1 3]

Encodes the pooled XQuAD-R corpus and its questions once (PooledDenseRetrieval's cache under --work, shared with
lareqa_table.py, so a second run encodes nothing), fits LanguageMeans on the corpus (the documents' dataset
language) and on the questions (unlabelled test questions: transductive, used only by the query-means variant),
applies each variant to the cached vectors and evaluates it with evaluate_pooled (exact, trec_eval tie order).
Writes bias_removal.NAME.{json,md}: AP and nDCG@10 Mo / Cr / Mul and Mul rank distance per variant. --languages
restricts the settings (their Mo, Cr and Mul); the means are always fitted on the whole pooled corpus, which Mul
searches.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ir_datasets
import pandas as pd
from ir_measures import AP, nDCG
from lareqa_table import HERE, offline_model

import pyterrier_hybrid as ph
from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.evaluation.measures import mul_only

COLLECTION = 'xquad-r'
MEASURES = [AP, nDCG @ 10, ph.RankDistance]


def variants(means: ph.LanguageMeans, ks: list[int]) -> dict[str, ph.LanguageBiasRemoval | None]:
    """The baseline and every variant: centring (corpus or query means), projection and both, per k."""
    all_k = len(means.languages()) - 1
    chosen = {'none': None, 'centre': ph.LanguageBiasRemoval(means),
              'centre, query means': ph.LanguageBiasRemoval(means, query_means='queries')}
    for k in dict.fromkeys([*ks, all_k]):
        chosen[f'project k={k}'] = ph.LanguageBiasRemoval(means, method='project', k=k)
    chosen[f'centre+project k={all_k}'] = ph.LanguageBiasRemoval(means, method='centre+project', k=all_k)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', help='checkpoint path (default: multilingual-e5-small from $OFFLINE_MODELS_DIR)')
    parser.add_argument('--name', default='mE5-small', help='names the encoding cache under --work')
    parser.add_argument('--languages', nargs='+', help='evaluate only the settings among these languages')
    parser.add_argument('--k', type=int, nargs='+', default=[1, 3],
                        help='directions to project out (all that the language means span is always added)')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--work', default=str(HERE.parent / 'runs'), help='where encodings are cached')
    parser.add_argument('--out', default=str(HERE / 'results'))
    args = parser.parse_args()

    model = args.model or offline_model('multilingual-e5-small')
    settings = ph.lareqa_settings(COLLECTION, langs=args.languages)
    timings = {}
    start = time.perf_counter()
    encoder = ph.HybridEncoder.from_pretrained(model, batch_size=args.batch_size, verbose=True)
    system = ph.PooledDenseRetrieval(encoder, f'lareqa/{COLLECTION}', Path(args.work) / args.name / COLLECTION)
    timings['encode_s'] = time.perf_counter() - start

    start = time.perf_counter()
    pooled = ir_datasets.load(f'lareqa/{COLLECTION}')
    docs = pd.DataFrame([(d.doc_id, d.lang) for d in pooled.docs_iter()], columns=['id', 'lang'])
    queries = pd.DataFrame([(q.query_id, q.lang) for q in pooled.queries_iter()], columns=['id', 'lang'])
    doc_vecs, query_vecs = system.docs.vectors(docs['id']), system.queries.vectors(queries['id'])
    means = ph.LanguageMeans.fit(zip(doc_vecs, docs['lang']), zip(query_vecs, queries['lang']))
    timings['fit_s'] = time.perf_counter() - start

    rows, reprs = [], {}
    for name, removal in variants(means, args.k).items():
        start = time.perf_counter()
        debiased = ph.PooledVectors.of(docs['id'], doc_vecs, queries['id'], query_vecs) if removal is None else \
            ph.PooledVectors.of(docs['id'], removal.apply(doc_vecs, docs['lang'], side='doc'),
                                queries['id'], removal.apply(query_vecs, queries['lang'], side='query'))
        rows.append(ph.evaluate_pooled({name: debiased}, settings, MEASURES))
        timings[f'evaluate_s[{name}]'] = time.perf_counter() - start
        reprs[name] = repr(removal)
        print(f'{name}: {timings[f"evaluate_s[{name}]"]:.1f} s', flush=True)

    table = ph.macro_average_perquery(pd.concat(rows, ignore_index=True))
    columns = [(str(m), kind) for m in MEASURES for kind in ('Mo', 'Cr', 'Mul')
               if (str(m), kind) in table.columns and (not mul_only(m) or kind == 'Mul')]
    table = table.reindex(index=list(reprs), columns=columns)
    table.columns = [f'{measure} {kind}' for measure, kind in columns]
    results = {
        'model': str(model), 'collection': COLLECTION, 'settings': len(settings),
        'languages': args.languages or list(ph.lareqa.COLLECTIONS[COLLECTION]),
        'fit': {'doc': 'pooled corpus, dataset lang', 'query': 'all questions, dataset lang (transductive)',
                'doc_counts': means.counts['doc'], 'query_counts': means.counts['query'], 'digest': means.digest},
        'variants': {name: {'transformer': reprs[name],
                            **{column: round(float(table.loc[name, column]), 4) for column in table.columns}}
                     for name in reprs},
        'timings': {k: round(v, 1) for k, v in timings.items()},
    }
    out = Path(args.out)
    write_atomically(out / f'bias_removal.{args.name}.json',
                     lambda tmp: tmp.write_text(json.dumps(results, indent=1) + '\n'))
    markdown = table.round(4).to_markdown()
    write_atomically(out / f'bias_removal.{args.name}.md', lambda tmp: tmp.write_text(
        f'XQuAD-R, {model}, {len(settings)} settings; means fitted on the pooled corpus (and, for "query means", '
        f'on the unlabelled questions)\n\n{markdown}\n'))
    print(markdown)


if __name__ == '__main__':
    main()
