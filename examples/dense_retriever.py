"""A drop-in dense retriever in a PyTerrier pipeline, alone and behind a BM25 first stage (bm25s: no Java).

    pip install bm25s
    export PYTERRIER_HYBRID_LAREQA_DIR=../shared/data/lareqa     # offline; unset to download
    python examples/dense_retriever.py [MODEL]                   # default: the offline multilingual-e5-small
"""
import os
import sys

import bm25s
import numpy as np
import pandas as pd
import pyterrier as pt
from ir_measures import AP, R, nDCG

import pyterrier_hybrid as ph


class BM25(pt.Transformer):
    """A minimal bm25s first stage: query frame in, result frame out."""

    def __init__(self, corpus: list[dict], num_results: int = 100):
        self.docnos = np.array([d['docno'] for d in corpus])
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenize([d['text'] for d in corpus], stopwords='en', show_progress=False),
                         show_progress=False)
        self.num_results = num_results

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        if not len(topics):  # pt.Experiment probes pipelines with an empty frame
            return pd.DataFrame(columns=['qid', 'query', 'docno', 'score', 'rank'])
        tokens = bm25s.tokenize(topics['query'].tolist(), stopwords='en', show_progress=False)
        ids, scores = self.model.retrieve(tokens, k=self.num_results, show_progress=False)
        rows = [{'qid': qid, 'query': query, 'docno': self.docnos[i], 'score': float(s), 'rank': r}
                for qid, query, qids, qscores in zip(topics['qid'], topics['query'], ids, scores)
                for r, (i, s) in enumerate(zip(qids, qscores))]
        return pd.DataFrame(rows)


model = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser('~/.cache/offline-models/multilingual-e5-small')
dataset = pt.get_dataset('irds:lareqa/xquad-r/en/en')  # English questions, English sentences (Mo)
corpus = list(dataset.get_corpus_iter(verbose=False))
topics, qrels = dataset.get_topics('text').head(200), dataset.get_qrels()  # 200 questions keep re-ranking quick

encoder = ph.HybridEncoder.from_pretrained(model)
index = ph.DenseIndex('runs/examples/xquad-r-en.index')
if not index.built():
    (encoder >> index).index(corpus)

bm25 = BM25(corpus)
dense = encoder >> index.retriever(num_results=100)                             # dense retrieval
rerank = bm25 % 20 >> pt.text.get_text(dataset, 'text') >> encoder.text_scorer()  # BM25 top 20, re-ranked
results = pt.Experiment([bm25, dense, rerank], topics, qrels, [nDCG @ 10, AP, R @ 100],
                        names=['BM25 (bm25s)', 'mE5 dense', 'BM25 top 20 >> mE5'], baseline=0, correction='holm',
                        round=3)
print(results.to_markdown(index=False))
