"""One encoding of a pooled multilingual corpus and its queries, serving every language setting.

XQuAD-R has 121 settings (11 Mo, 110 Cr) plus 11 Mul, all over the same 13,014 candidates and 13,090 questions.
Re-encoding per setting would cost 132 passes; :class:`PooledDenseRetrieval` encodes the pooled corpus into one
:class:`~pyterrier_hybrid.DenseIndex` and all queries into a second one, once, and then builds for each
:class:`~pyterrier_hybrid.Setting` an exact retriever restricted to that setting's documents.
"""
from __future__ import annotations

import os
from pathlib import Path

import ir_datasets
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta

from pyterrier_hybrid.evaluation.settings import Setting

from .encoder import HybridEncoder
from .index import DenseIndex


class QueryVectors(pt.Transformer):
    """Adds ``query_vec`` looked up by ``qid`` in an index of query vectors (queries encoded once)."""

    def __init__(self, index: DenseIndex):
        self.index = index

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pta.validate.query_frame(inp)
        return inp.assign(query_vec=list(self.index.vectors(inp['qid'])))

    def __repr__(self) -> str:
        return f'QueryVectors({self.index!r})'


class PooledDenseRetrieval:
    """Builds, per setting, a dense retriever over one shared encoding of a pooled corpus.

    Args:
        encoder: the query and document encoder.
        dataset_id: the ir_datasets id of the pooled corpus and all its queries (``lareqa/xquad-r``).
        path: directory for the two indexes (``docs.index``, ``queries.index``); reused when already built.
        num_results: results per query; ``None`` (default) ranks the setting's whole corpus, as AP over the full
            ranking and rank distance need.

    Use it as a system of :func:`~pyterrier_hybrid.evaluate_settings`:

    .. code-block:: python

        system = PooledDenseRetrieval(encoder, 'lareqa/xquad-r', 'runs/me5/xquad-r')
        results = ph.evaluate_settings({'mE5': system}, ph.lareqa_settings('xquad-r'), [AP, ph.RankDistance])
    """

    def __init__(self, encoder: HybridEncoder, dataset_id: str, path: str | os.PathLike,
                 num_results: int | None = None):
        self.encoder, self.dataset_id, self.num_results = encoder, dataset_id, num_results
        path = Path(path)
        dataset = pt.get_dataset(f'irds:{dataset_id}')
        self.docs = DenseIndex(path / 'docs.index')
        if not self.docs.built():
            # large indexing batches: the encoder sorts each batch by length, so bigger batches pad less
            (encoder >> self.docs).index(dataset.get_corpus_iter(verbose=False), batch_size=4096)
        self.docs.bind_encoder(encoder)
        self.queries = DenseIndex(path / 'queries.index')
        if not self.queries.built():
            topics = dataset.get_topics('text')
            encoded = encoder.query_encoder()(topics).rename(columns={'qid': 'docno', 'query_vec': 'doc_vec'})
            self.queries._encoder_metadata = encoder.index_metadata()
            self.queries.indexer().index(encoded[['docno', 'doc_vec']])
        self.queries.check_encoder(encoder.index_metadata())

    def __call__(self, setting: Setting) -> pt.Transformer:
        docnos = [d.doc_id for d in ir_datasets.load(setting.dataset_id).docs_iter()]
        subset = None if len(docnos) == len(self.docs) else docnos
        return QueryVectors(self.queries) >> self.docs.retriever(self.num_results, docnos=subset, drop_query_vec=True)
