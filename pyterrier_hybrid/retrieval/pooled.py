"""One encoding of a pooled multilingual corpus and its queries, serving every language setting.

XQuAD-R has 121 settings (11 Mo, 110 Cr) plus 11 Mul, all over the same 13,014 candidates and 13,090 questions.
Re-encoding per setting would cost 132 passes; :class:`PooledDenseRetrieval` encodes the pooled corpus into one
:class:`~pyterrier_hybrid.DenseIndex` and all queries into a second one, once (split over the processes when
started by torchrun with ``distributed=True``: :mod:`~pyterrier_hybrid.retrieval.distributed`), and then builds for each
:class:`~pyterrier_hybrid.Setting` an exact retriever restricted to that setting's documents.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import ir_datasets
import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta

from pyterrier_hybrid.evaluation.settings import Setting

from .distributed import build_index
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
        distributed: in a script started by torchrun, split the encoding over its ranks (every rank must build the
            system; load the encoder with ``device=local_device()``: :mod:`~pyterrier_hybrid.retrieval.distributed`).

    Use it as a system of :func:`~pyterrier_hybrid.evaluate_settings`:

    .. code-block:: python

        system = PooledDenseRetrieval(encoder, 'lareqa/xquad-r', 'runs/me5/xquad-r')
        results = ph.evaluate_settings({'mE5': system}, ph.lareqa_settings('xquad-r'), [AP, ph.RankDistance])
    """

    def __init__(self, encoder: HybridEncoder, dataset_id: str, path: str | os.PathLike,
                 num_results: int | None = None, distributed: bool = False):
        self.encoder, self.dataset_id, self.num_results = encoder, dataset_id, num_results
        path = Path(path)
        dataset = pt.get_dataset(f'irds:{dataset_id}')
        self.docs = DenseIndex(path / 'docs.index')
        if not self.docs.built():
            # large indexing batches: the encoder sorts each batch by length, so bigger batches pad less
            build_index(self.docs, encoder, lambda: dataset.get_corpus_iter(verbose=False), encoder.index_metadata(),
                        distributed=distributed)
        self.docs.bind_encoder(encoder)
        self.queries = DenseIndex(path / 'queries.index')
        if not self.queries.built():
            as_docs = pt.apply.generic(lambda frame: frame.rename(columns={'qid': 'docno', 'query_vec': 'doc_vec'}))
            build_index(self.queries, encoder.query_encoder() >> as_docs,
                        lambda: dataset.get_topics('text').to_dict(orient='records'), encoder.index_metadata(),
                        distributed=distributed)
        self.queries.check_encoder(encoder.index_metadata())

    def debiased(self, path: str | os.PathLike, **options) -> PooledDenseRetrieval:
        """This encoding with :class:`~pyterrier_hybrid.LanguageBiasRemoval` (``options``: method, k,
        query_means) applied to documents and queries: the language means are fitted on all the pooled corpus'
        vectors and all its queries', by the languages the data set records, and the debiased vectors are stored
        in ``path`` (with the means) and reused."""
        from .bias import LanguageBiasRemoval, LanguageMeans
        path = Path(path)
        docs, queries = DenseIndex(path / 'docs.index'), DenseIndex(path / 'queries.index')
        if not (docs.built() and queries.built()):
            dataset = ir_datasets.load(self.dataset_id)
            doc_ids, doc_vecs = _vectors(self.docs)
            query_ids, query_vecs = _vectors(self.queries)
            doc_langs = _languages(dataset.docs_iter(), 'doc_id', self.dataset_id, doc_ids)
            query_langs = _languages(dataset.queries_iter(), 'query_id', self.dataset_id, query_ids)
            means = LanguageMeans.fit(zip(doc_vecs, doc_langs), zip(query_vecs, query_langs))
            removal = LanguageBiasRemoval(means, **options)
            means.save(path / 'language_means')
            metadata = {**self.docs.encoder_metadata, 'bias_removal': {**options, 'means': means.digest}}
            for target, ids, vectors, langs, side in [(docs, doc_ids, doc_vecs, doc_langs, 'doc'),
                                                      (queries, query_ids, query_vecs, query_langs, 'query')]:
                target.indexer(mode='overwrite', encoder_metadata=metadata).index(
                    {'docno': i, 'doc_vec': v} for i, v in zip(ids, removal.apply(vectors, langs, side)))
        debiased = copy.copy(self)  # the same encoder and data set, other vectors
        debiased.docs, debiased.queries = docs, queries
        return debiased

    def __call__(self, setting: Setting) -> pt.Transformer:
        docnos = [d.doc_id for d in ir_datasets.load(setting.dataset_id).docs_iter()]
        subset = None if len(docnos) == len(self.docs) else docnos
        return QueryVectors(self.queries) >> self.docs.retriever(self.num_results, docnos=subset, drop_query_vec=True)


def _languages(records, id_field: str, dataset_id: str, ids: list[str]) -> list[str]:
    """The language of each of ``ids``, as the data set records it (language-bias removal centres by it)."""
    langs = {}
    for record in records:
        lang = getattr(record, 'lang', None)
        if not lang:
            raise ValueError(f'{dataset_id} does not record the language of {getattr(record, id_field)!r}; '
                             'language-bias removal needs each text\'s language (a lang field)')
        langs[getattr(record, id_field)] = lang
    return [langs[i] for i in ids]


def _vectors(index: DenseIndex) -> tuple[list[str], np.ndarray]:
    """All ids and vectors of an index, in its order."""
    docnos, vectors, _ = index.payload()
    return list(docnos), np.asarray(vectors)
