"""A dense index that knows which encoder built it, is written atomically, and searches subsets with FAISS.

:class:`DenseIndex` is a :class:`pyterrier_dr.FlexIndex` (same files, so pyterrier-dr's own retrievers and
``pt.Artifact.load`` work on it) with what LAReQA-style evaluation needs on top:

* metadata: the model, its dimension and similarity, and the document count, checked against the query encoder;
* atomic writes: an index is built in a temporary directory and renamed into place, so an interrupted or failed
  build never leaves a half index, and ``mode='overwrite'`` keeps the old index until the new one is complete;
* integrity checks: a missing, unparsable or truncated file is reported by name, not as a crash inside FAISS;
* :meth:`DenseIndex.retriever`: exact inner-product search (default), HNSW or IVF-PQ, over the whole index or a
  subset of its documents, so that one encoding of a pooled multilingual corpus serves every language setting;
* sharding: :func:`shard_corpus` and :meth:`DenseIndex.merge` encode a large corpus in N processes.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
from npids import Lookup
from pyterrier_dr import FlexIndex
from pyterrier_dr.flex.core import FlexIndexer

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.retrieval.scoring import exact_search

METHODS = ('flat', 'hnsw', 'ivfpq')


class CorruptIndexError(RuntimeError):
    """An index directory whose files are missing, unreadable or inconsistent."""


class IncompatibleEncoderError(ValueError):
    """A query encoder whose vectors cannot be searched in this index."""


class DenseIndex(FlexIndex):
    """A FlexIndex with encoder metadata, atomic builds, integrity checks and subset / ANN retrieval.

    .. code-block:: python

        index = DenseIndex('xquad-r.index')
        (encoder >> index).index(pt.get_dataset('irds:lareqa/xquad-r').get_corpus_iter())
        german = encoder >> index.retriever(docnos=german_docnos, num_results=None)  # full ranking of a subset
    """

    def __init__(self, path: str | os.PathLike, *, verbose: bool = False):
        super().__init__(path, sim_fn='dot', verbose=verbose)
        self._encoder_metadata: dict | None = None

    # --- metadata and integrity ------------------------------------------------------------------------------

    @property
    def metadata(self) -> dict:
        """The index's ``pt_meta.json``: type, format, vec_size, doc_count and the encoder that built it."""
        meta, = self.payload(return_dvecs=False, return_docnos=False)
        return meta

    def payload(self, return_dvecs: bool = True, return_docnos: bool = True):
        if self._meta is None:
            self._meta = _read_checked_metadata(self.index_path)
        return super().payload(return_dvecs=return_dvecs, return_docnos=return_docnos)

    def bind_encoder(self, encoder) -> None:
        """Record the encoder for the next build, or check it against the built index (``encoder >> index``)."""
        if self.built():
            self.check_encoder(encoder.index_metadata())
        else:
            self._encoder_metadata = encoder.index_metadata()

    def check_encoder(self, encoder_metadata: dict) -> None:
        """Refuse an encoder whose dimension or similarity differs from the one that built this index."""
        meta = self.metadata
        if encoder_metadata['dimension'] != meta['vec_size']:
            raise IncompatibleEncoderError(
                f'{self.index_path} holds {meta["vec_size"]}-dimensional vectors from {meta.get("model", "?")!r}, '
                f'but the encoder {encoder_metadata["model"]!r} produces {encoder_metadata["dimension"]} dimensions')
        if meta.get('similarity', encoder_metadata['similarity']) != encoder_metadata['similarity']:
            raise IncompatibleEncoderError(
                f'{self.index_path} was built for {meta["similarity"]} similarity ({meta.get("model", "?")!r}), '
                f'but the encoder {encoder_metadata["model"]!r} uses {encoder_metadata["similarity"]}')

    # --- building --------------------------------------------------------------------------------------------

    def indexer(self, *, mode: str = 'create') -> pt.Indexer:
        return AtomicIndexer(self, mode=mode)

    @classmethod
    def merge(cls, shards: Iterable[DenseIndex | str | os.PathLike], path: str | os.PathLike,
              mode: str = 'create') -> DenseIndex:
        """Merge the indexes of :func:`shard_corpus` shards 0..N-1 (in that order) into one, in corpus order."""
        shards = [s if isinstance(s, DenseIndex) else DenseIndex(s) for s in shards]
        if not shards:
            raise ValueError('no shards to merge')
        metas = [s.metadata for s in shards]
        for shard, meta in zip(shards[1:], metas[1:]):
            if (meta['vec_size'], meta.get('model')) != (metas[0]['vec_size'], metas[0].get('model')):
                raise IncompatibleEncoderError(f'{shard.index_path} was built by another encoder than '
                                               f'{shards[0].index_path}; shards must share one encoder')
        streams = [s.get_corpus_iter(verbose=False) for s in shards]
        merged = cls(path)
        merged._encoder_metadata = {k: v for k, v in metas[0].items() if k not in _FLEX_KEYS}
        interleaved = (doc for group in itertools.zip_longest(*streams) for doc in group if doc is not None)
        merged.indexer(mode=mode).index({'docno': d['docno'], 'doc_vec': d['doc_vec']} for d in interleaved)
        return merged

    # --- retrieval -------------------------------------------------------------------------------------------

    def retriever(self, num_results: int | None = 1000, *, method: str = 'flat', docnos: Iterable[str] | None = None,
                  drop_query_vec: bool = False, **params) -> FaissRetriever:
        """A retriever over this index (or the subset ``docnos`` of it).

        Args:
            num_results: results per query; ``None`` ranks every (selected) document.
            method: ``'flat'`` (exact inner product), ``'hnsw'`` (params: ``neighbours=32``, ``ef_construction=40``,
                ``ef_search=64``) or ``'ivfpq'`` (params: ``n_list`` (default 4·√N), ``pq_m=16`` bytes per vector,
                ``n_probe=16``). ANN structures are built once and cached in the index directory.
            docnos: restrict the search to these documents (e.g. one language of a pooled corpus).
            drop_query_vec: drop the ``query_vec`` column from the output.
        """
        if method not in METHODS:
            raise ValueError(f'unknown method {method!r}; valid: {", ".join(METHODS)}')
        return FaissRetriever(self, num_results=num_results, method=method, docnos=docnos,
                              drop_query_vec=drop_query_vec, **params)

    def docids(self, docnos: Iterable[str]) -> np.ndarray:
        """The row numbers of ``docnos``, in the given order; a KeyError names docnos the index lacks."""
        docno_lookup, = self.payload(return_dvecs=False, return_docnos=True)[:1]
        docnos = np.asarray(list(docnos), dtype=object)
        ids = np.asarray(docno_lookup.inv[docnos], dtype=np.int64) if len(docnos) else np.empty(0, np.int64)
        if (ids < 0).any():
            missing = ', '.join(map(str, docnos[ids < 0][:5]))
            raise KeyError(f'{int((ids < 0).sum())} docno(s) not in {self.index_path}: {missing}')
        return ids

    def docno_array(self) -> np.ndarray:
        """All docnos as an object array, cached: vectorised lookups for large result frames."""
        if 'docno_array' not in self._cache:
            docno_lookup, = self.payload(return_dvecs=False)[:1]
            self._cache['docno_array'] = np.array(list(docno_lookup), dtype=object)
        return self._cache['docno_array']

    def vectors(self, docnos: Iterable[str]) -> np.ndarray:
        """The stored vectors of ``docnos``, in the given order."""
        dvecs, _ = self.payload(return_docnos=False)
        return np.asarray(dvecs[self.docids(docnos)])

    def _faiss_index(self, method: str, params: dict):
        """The FAISS structure for ``method``, built once and cached in memory and (for ANN) on disk."""
        import faiss
        dvecs, meta = self.payload(return_docnos=False)
        key = (method,) + tuple(sorted(params.items()))
        if key in self._cache:
            return self._cache[key]
        dim, count = meta['vec_size'], meta['doc_count']
        if method == 'flat':
            index = faiss.IndexFlatIP(dim)
        elif method == 'hnsw':
            index = faiss.IndexHNSWFlat(dim, params['neighbours'], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params['ef_construction']
        else:
            index = faiss.index_factory(dim, f'IVF{params["n_list"]},PQ{params["pq_m"]}', faiss.METRIC_INNER_PRODUCT)
        cached = self.index_path / ('_'.join(f'{k}-{v}' for k, v in key[1:]) + f'.{method}.faiss')
        if method != 'flat' and cached.is_file():
            index = faiss.read_index(str(cached))
        else:
            if not index.is_trained:
                sample = np.random.default_rng(0).choice(count, size=min(count, 256 * params['n_list']), replace=False)
                index.train(np.ascontiguousarray(dvecs[np.sort(sample)]))
            for start in range(0, count, 65536):
                index.add(np.ascontiguousarray(dvecs[start:start + 65536]))
            if method != 'flat':
                write_atomically(cached, lambda tmp: faiss.write_index(index, str(tmp)))
        self._cache[key] = index
        return index

    def __repr__(self) -> str:
        return f'DenseIndex({str(self.index_path)!r})'


_FLEX_KEYS = ('type', 'format', 'vec_size', 'doc_count')


def _read_checked_metadata(path: Path) -> dict:
    meta_path = path / 'pt_meta.json'
    if not meta_path.is_file():
        raise CorruptIndexError(f'{path} is not a built index: {meta_path.name} is missing')
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptIndexError(f'{meta_path} is not valid JSON ({error}); rebuild the index') from error
    missing = [k for k in _FLEX_KEYS if k not in meta]
    if missing or meta['type'] != 'dense_index' or meta['format'] != 'flex':
        raise CorruptIndexError(f'{meta_path} does not describe a flex dense index (missing: {missing or "-"})')
    expected = meta['doc_count'] * meta['vec_size'] * 4
    vecs = path / 'vecs.f4'
    actual = vecs.stat().st_size if vecs.is_file() else None
    if actual != expected:
        found = 'missing' if actual is None else f'{actual} bytes'
        raise CorruptIndexError(f'{vecs} is truncated or corrupt: {meta["doc_count"]} vectors of '
                                f'{meta["vec_size"]} floats need {expected} bytes, found {found}; rebuild the index')
    try:
        with Lookup(path / 'docnos.npids') as docnos:
            count = len(docnos)
    except Exception as error:  # npids raises assorted errors on damaged files
        raise CorruptIndexError(f'{path / "docnos.npids"} cannot be read ({error}); rebuild the index') from error
    if count != meta['doc_count']:
        raise CorruptIndexError(f'{path / "docnos.npids"} holds {count} docnos but {meta_path.name} says '
                                f'{meta["doc_count"]}; rebuild the index')
    return meta


def _unique_docnos(inp: Iterable[dict]) -> Iterator[dict]:
    """Pass documents through, refusing a docno seen before (an index maps each docno to one vector)."""
    seen = set()
    for doc in inp:
        if doc['docno'] in seen:
            raise ValueError(f'duplicate docno {doc["docno"]!r} in the corpus; docnos must be unique')
        seen.add(doc['docno'])
        yield doc


class AtomicIndexer(pt.Indexer):
    """Builds a :class:`DenseIndex` in a temporary directory and renames it into place when complete."""

    def __init__(self, index: DenseIndex, mode: str = 'create'):
        if mode not in ('create', 'overwrite'):
            raise ValueError(f"mode must be 'create' or 'overwrite', not {mode!r}")
        self.flex_index, self.mode = index, mode

    def index_inputs(self):
        return [['docno', 'doc_vec']]

    def index(self, inp) -> DenseIndex:
        path = Path(self.flex_index.index_path)
        if path.exists() and self.mode == 'create':
            raise FileExistsError(f'{path} already exists; use index.indexer(mode="overwrite") to replace it')
        if isinstance(inp, pd.DataFrame):
            inp = inp.to_dict(orient='records')
        inp = iter(inp)
        first = next(inp, None)
        if first is None:
            raise ValueError(f'no documents to index into {path}')
        inp = itertools.chain([first], inp)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.building-'))
        try:
            FlexIndexer(FlexIndex(tmp / 'index', verbose=self.flex_index.verbose)).index(_unique_docnos(inp))
            meta = json.loads((tmp / 'index' / 'pt_meta.json').read_text())
            meta.update(self.flex_index._encoder_metadata or {})
            (tmp / 'index' / 'pt_meta.json').write_text(json.dumps(meta, indent=1))
            if path.exists():  # overwrite: the old index stays until the new one is in place
                os.replace(path, tmp / 'old')
            os.replace(tmp / 'index', path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        index = self.flex_index
        index._meta = index._docnos = index._dvecs = None
        index._cache.clear()
        return index


def shard_corpus(corpus: Iterable[dict], shard: int, num_shards: int) -> Iterator[dict]:
    """The documents of shard ``shard`` of ``num_shards`` (round robin), for encoding in separate processes.

    Index each shard separately, then :meth:`DenseIndex.merge` the shard indexes in order 0..N-1; the result
    equals the index built from the whole corpus in one process.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f'shard must be in 0..{num_shards - 1}, not {shard}')
    return itertools.islice(corpus, shard, None, num_shards)


class FaissRetriever(pt.Transformer):
    """FAISS search over a :class:`DenseIndex`, optionally restricted to a subset of its documents."""

    def __init__(self, index: DenseIndex, *, num_results: int | None = 1000, method: str = 'flat',
                 docnos: Iterable[str] | None = None, drop_query_vec: bool = False, **params):
        self.flex_index = index
        self.num_results, self.method, self.drop_query_vec = num_results, method, drop_query_vec
        self.build_params, self.search_params = _split_params(method, params, len(index))
        self.docids = None if docnos is None else np.sort(index.docids(docnos))

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pta.validate.query_frame(inp, extra_columns=['query_vec'])
        builder = pta.DataFrameBuilder(['docno', 'docid', 'score', 'rank'])
        inp = inp.reset_index(drop=True)
        query_vecs = np.stack(inp['query_vec']) if len(inp) else None
        if self.drop_query_vec:
            inp = inp.drop(columns='query_vec')
        if query_vecs is None:
            return builder.to_df(inp)
        query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
        meta = self.flex_index.metadata
        if query_vecs.shape[1] != meta['vec_size']:
            raise IncompatibleEncoderError(f'query vectors have {query_vecs.shape[1]} dimensions but '
                                           f'{self.flex_index.index_path} holds {meta["vec_size"]}-dimensional ones')
        scores, docids = self._search(query_vecs)
        found = docids >= 0  # FAISS pads with -1 when fewer than k documents qualify
        builder.extend({'_index': np.nonzero(found)[0], 'docno': self.flex_index.docno_array()[docids[found]],
                        'docid': docids[found], 'score': scores[found],
                        'rank': (np.cumsum(found, axis=1) - 1)[found]})
        return builder.to_df(inp)

    def _search(self, query_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.method == 'flat':
            # exact: scores that do not depend on the batch or the BLAS kernel, ties ranked as trec_eval ranks them
            dvecs, _ = self.flex_index.payload(return_docnos=False)
            docids = np.arange(len(self.flex_index)) if self.docids is None else self.docids
            k = len(docids) if self.num_results is None else self.num_results
            scores, rows = exact_search(query_vecs, np.asarray(dvecs[docids]),
                                        self.flex_index.docno_array()[docids], k)
            return scores, docids[rows]
        import faiss
        faiss_index = self.flex_index._faiss_index(self.method, self.build_params)
        candidates = faiss_index.ntotal if self.docids is None else len(self.docids)
        k = candidates if self.num_results is None else min(self.num_results, candidates)
        selector = None if self.docids is None else faiss.IDSelectorBatch(self.docids)
        params_cls = {'hnsw': faiss.SearchParametersHNSW, 'ivfpq': faiss.SearchParametersIVF}[self.method]
        search_params = params_cls(**self.search_params)
        if selector is not None:
            search_params.sel = selector
        return faiss_index.search(query_vecs, k, params=search_params)

    def fuse_rank_cutoff(self, k: int) -> FaissRetriever | None:
        if self.num_results is None or k < self.num_results:
            clone = FaissRetriever.__new__(FaissRetriever)
            clone.__dict__.update(self.__dict__, num_results=k)
            return clone
        return None

    def __repr__(self) -> str:
        subset = '' if self.docids is None else f', docnos=<{len(self.docids)} docs>'
        return f'{self.flex_index!r}.retriever(num_results={self.num_results!r}, method={self.method!r}{subset})'


def _split_params(method: str, params: dict, count: int) -> tuple[dict, dict]:
    """Separate and default the build-time and search-time parameters of a method; reject unknown ones."""
    defaults = {
        'flat': ({}, {}),
        'hnsw': ({'neighbours': 32, 'ef_construction': 40}, {'ef_search': 64}),
        'ivfpq': ({'n_list': max(1, int(4 * count ** 0.5)), 'pq_m': 16}, {'n_probe': 16}),
    }[method]
    unknown = set(params) - set(defaults[0]) - set(defaults[1])
    if unknown:
        valid = ', '.join([*defaults[0], *defaults[1]]) or 'none'
        raise TypeError(f'unknown parameter(s) {", ".join(sorted(unknown))} for method {method!r}; valid: {valid}')
    build = {k: params.get(k, v) for k, v in defaults[0].items()}
    search = {k: params.get(k, v) for k, v in defaults[1].items()}
    search = {{'ef_search': 'efSearch', 'n_probe': 'nprobe'}[k]: v for k, v in search.items()}
    return build, search
