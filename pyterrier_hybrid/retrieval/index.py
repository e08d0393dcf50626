"""A dense index that knows which encoder built it, is built atomically and safely, and searches subsets.

:class:`DenseIndex` is a :class:`pyterrier_dr.FlexIndex` (the same vector and docno files, so pyterrier-dr's own
retrievers work on it) with what LAReQA-style evaluation needs on top:

* an artifact of its own (``dense_index.hybrid_flex``), so ``pt.Artifact.load``, ``from_hf`` and ``to_hf`` give back
  a :class:`DenseIndex` with its checks and retrievers, while plain ``dense_index.flex`` directories keep loading as
  pyterrier-dr's FlexIndex (and open as a DenseIndex too);
* the encoder that built it (model, dimension, similarity), checked against the query encoder;
* safe builds: an index is built in a hidden ``.NAME.building-*`` directory under a lock and renamed into place, so
  two builds into one path cannot both win, an interrupted build never leaves a half index, and an overwrite killed
  between its two renames is completed by the next open or build;
* integrity checks: a missing, unparsable, truncated file or a non-finite vector is reported by file name;
* :meth:`DenseIndex.retriever` (attached at the end of this module, the way pyterrier-dr attaches its backends):
  exact inner-product search (:mod:`pyterrier_hybrid.retrieval.scoring`), or HNSW or IVF-PQ with FAISS, over the
  whole index or a subset of its documents, so that one encoding of a pooled multilingual corpus serves every
  language setting;
* sharding: :func:`shard_corpus` and :meth:`DenseIndex.merge` encode a large corpus in N processes.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import numbers
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
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
# What a DenseIndex reads: its own format, and pyterrier-dr's (indexes built before it had one, plain FlexIndexes).
FORMATS = ('hybrid_flex', 'flex')


class CorruptIndexError(ValueError):
    """An index directory whose files are missing, unreadable or inconsistent (a ValueError: bad input data)."""


class IncompatibleEncoderError(ValueError):
    """A query encoder whose vectors cannot be (or should not be) searched in this index."""


class DenseIndex(FlexIndex):
    """A FlexIndex with encoder metadata, safe builds, integrity checks and subset / ANN retrieval.

    Args:
        path: the index directory.
        verbose: show progress bars.
        allow_other_encoder: search with an encoder other than the one that built the index (same dimension and
            similarity still required), e.g. a fine-tuned query encoder; refused by default.

    .. code-block:: python

        index = DenseIndex('xquad-r.index')
        (encoder >> index).index(pt.get_dataset('irds:lareqa/xquad-r').get_corpus_iter())
        german = encoder >> index.retriever(docnos=german_docnos, num_results=None)  # full ranking of a subset
    """

    ARTIFACT_TYPE = 'dense_index'
    ARTIFACT_FORMAT = 'hybrid_flex'
    ARTIFACT_PACKAGE_HINT = 'pyterrier-hybrid'

    def __init__(self, path: str | os.PathLike, *, verbose: bool = False, allow_other_encoder: bool = False):
        super().__init__(path, sim_fn='dot', verbose=verbose)
        self.allow_other_encoder = allow_other_encoder
        self._encoder_metadata: dict | None = None  # the encoder to record at the next build
        self._files: dict = {}  # meta, docnos, dvecs: opened and checked once
        self._structures: dict = {}  # docno array and FAISS structures

    # --- metadata and integrity ------------------------------------------------------------------------------

    @property
    def metadata(self) -> dict:
        """The index's ``pt_meta.json``: type, format, vec_size, doc_count and the encoder that built it."""
        meta, = self.payload(return_dvecs=False, return_docnos=False)
        return meta

    @property
    def encoder_metadata(self) -> dict:
        """What :attr:`metadata` records about the encoder that built the index (what a derived index inherits)."""
        return {k: v for k, v in self.metadata.items() if k not in _FLEX_KEYS}

    def payload(self, return_dvecs: bool = True, return_docnos: bool = True) -> list:
        """``[docnos, dvecs, meta]`` like :meth:`FlexIndex.payload`, each file checked when first opened."""
        if 'meta' not in self._files:
            _recover(self.index_path)
            self._files['meta'] = _read_checked_metadata(self.index_path)
        meta = self._files['meta']
        if return_dvecs and 'dvecs' not in self._files:
            dvecs = np.memmap(self.index_path / 'vecs.f4', mode='r', dtype=np.float32,
                              shape=(meta['doc_count'], meta['vec_size']))
            _check_finite(dvecs, self.index_path / 'vecs.f4')
            self._files['dvecs'] = dvecs
        if return_docnos and 'docnos' not in self._files:
            self._files['docnos'] = Lookup(self.index_path / 'docnos.npids')
        wanted = [('docnos', return_docnos), ('dvecs', return_dvecs)]
        return [self._files[name] for name, want in wanted if want] + [meta]

    def built(self) -> bool:
        """Whether the index exists (after completing an overwrite that a killed process left half done)."""
        _recover(self.index_path)
        return self.index_path.exists()

    def bind_encoder(self, encoder) -> None:
        """Record the encoder for the next build, or check it against the built index (``encoder >> index``)."""
        if self.built():
            self.check_encoder(encoder.index_metadata())
        else:
            self._encoder_metadata = encoder.index_metadata()

    def check_encoder(self, encoder_metadata: dict) -> None:
        """Refuse an encoder whose dimension or similarity differs from the one that built this index, or (unless
        ``allow_other_encoder``) another model: its vectors would be searched without an error, but meaninglessly."""
        meta, built_by, model = self.metadata, self.metadata.get('model', '?'), encoder_metadata['model']
        if encoder_metadata['dimension'] != meta['vec_size']:
            raise IncompatibleEncoderError(
                f'{self.index_path} holds {meta["vec_size"]}-dimensional vectors from {built_by!r}, '
                f'but the encoder {model!r} produces {encoder_metadata["dimension"]} dimensions')
        if meta.get('similarity', encoder_metadata['similarity']) != encoder_metadata['similarity']:
            raise IncompatibleEncoderError(
                f'{self.index_path} was built for {meta["similarity"]} similarity ({built_by!r}), '
                f'but the encoder {model!r} uses {encoder_metadata["similarity"]}')
        if 'model' in meta and not self.allow_other_encoder and not _same_model(meta['model'], model):
            raise IncompatibleEncoderError(
                f'{self.index_path} was built by {built_by!r}, not by the query encoder {model!r}; pass '
                'allow_other_encoder=True (CLI: --allow-other-encoder) to search it with another model anyway')

    # --- building --------------------------------------------------------------------------------------------

    def indexer(self, *, mode: str = 'create', encoder_metadata: dict | None = None) -> pt.Indexer:
        """Builds the index (``mode``: ``'create'`` or ``'overwrite'``), recording ``encoder_metadata`` (default:
        the encoder bound by ``encoder >> index``) for vectors that arrive already encoded."""
        if encoder_metadata is not None:
            self._encoder_metadata = encoder_metadata
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
        interleaved = (doc for group in itertools.zip_longest(*streams) for doc in group if doc is not None)
        merged.indexer(mode=mode, encoder_metadata=shards[0].encoder_metadata).index(
            {'docno': d['docno'], 'doc_vec': d['doc_vec']} for d in interleaved)
        return merged

    def _forget_files(self) -> None:
        """Drop what was read from the files (after a rebuild)."""
        self._files.clear()
        self._structures.clear()

    # --- lookups ---------------------------------------------------------------------------------------------

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
        if 'docno_array' not in self._structures:
            docno_lookup, = self.payload(return_dvecs=False)[:1]
            self._structures['docno_array'] = np.array(list(docno_lookup), dtype=object)
        return self._structures['docno_array']

    def vectors(self, docnos: Iterable[str]) -> np.ndarray:
        """The stored vectors of ``docnos``, in the given order."""
        dvecs, _ = self.payload(return_docnos=False)
        return np.asarray(dvecs[self.docids(docnos)])

    def _faiss_index(self, method: str, params: dict):
        """The FAISS ANN structure for ``method`` (``hnsw``, ``ivfpq``), built once and cached in memory and on disk
        (exact search needs none: it scores with :func:`~pyterrier_hybrid.retrieval.scoring.exact_search`)."""
        import faiss
        dvecs, meta = self.payload(return_docnos=False)
        key = (method,) + tuple(sorted(params.items()))
        if key in self._structures:
            return self._structures[key]
        dim, count = meta['vec_size'], meta['doc_count']
        if method == 'hnsw':
            index = faiss.IndexHNSWFlat(dim, params['neighbours'], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params['ef_construction']
        else:
            index = faiss.index_factory(dim, f'IVF{params["n_list"]},PQ{params["pq_m"]}', faiss.METRIC_INNER_PRODUCT)
        cached = self.index_path / ('_'.join(f'{k}-{v}' for k, v in key[1:]) + f'.{method}.faiss')
        if cached.is_file():
            index = faiss.read_index(str(cached))
        else:
            if not index.is_trained:
                sample = np.random.default_rng(0).choice(count, size=min(count, 256 * params['n_list']), replace=False)
                index.train(np.ascontiguousarray(dvecs[np.sort(sample)]))
            for start in range(0, count, 65536):
                index.add(np.ascontiguousarray(dvecs[start:start + 65536]))
            write_atomically(cached, lambda tmp: faiss.write_index(index, str(tmp)))
        self._structures[key] = index
        return index

    def __repr__(self) -> str:
        return f'DenseIndex({str(self.index_path)!r})'


class _Replacement(DenseIndex):
    """The index an overwrite writes: an encoder bound to it is recorded, never checked against the index it replaces
    (which may come from another model, or be corrupt: replacing it is the way to repair it)."""

    def bind_encoder(self, encoder) -> None:
        self._encoder_metadata = encoder.index_metadata()


_FLEX_KEYS = ('type', 'format', 'vec_size', 'doc_count')


def _same_model(a: str, b: str) -> bool:
    """Same Hub id, or the same local directory however it is spelled."""
    return a == b or (os.path.isdir(a) and os.path.isdir(b) and os.path.samefile(a, b))


def _read_checked_metadata(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f'no index at {path}; build it first')
    meta_path = path / 'pt_meta.json'
    if not meta_path.is_file():
        raise CorruptIndexError(f'{path} is not a built index: {meta_path.name} is missing')
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptIndexError(f'{meta_path} is not valid JSON ({error}); rebuild the index') from error
    missing = [k for k in _FLEX_KEYS if k not in meta]
    if missing or meta['type'] != 'dense_index' or meta['format'] not in FORMATS:
        raise CorruptIndexError(f'{meta_path} does not describe a flex dense index (missing: {missing or "-"}; '
                                f'format must be one of {", ".join(FORMATS)})')
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


def _check_finite(dvecs: np.ndarray, vecs_path: Path, rows: int = 65536) -> None:
    """Refuse NaN or infinite vectors, which FAISS and numpy would silently drop from (or misplace in) rankings.

    One sequential pass over the file, once per opened index: the cost of one exhaustive search."""
    for start in range(0, len(dvecs), rows):
        bad = ~np.isfinite(dvecs[start:start + rows]).all(axis=1)
        if bad.any():
            first = start + int(np.argmax(bad))
            raise CorruptIndexError(f'{vecs_path} holds NaN or infinite values (first in vector {first}); the file '
                                    'is damaged: rebuild the index')


# --- building --------------------------------------------------------------------------------------------------


def _checked_docs(inp: Iterable[dict]) -> Iterator[dict]:
    """Pass documents through, refusing a docno seen before (an index maps each docno to one vector) and a
    non-finite vector (an encoder that overflowed: it would vanish from every ranking)."""
    seen = set()
    for doc in inp:
        if doc['docno'] in seen:
            raise ValueError(f'duplicate docno {doc["docno"]!r} in the corpus; docnos must be unique')
        if not np.isfinite(doc['doc_vec']).all():
            raise ValueError(f'the vector of {doc["docno"]!r} holds NaN or infinite values; check the encoder')
        seen.add(doc['docno'])
        yield doc


class AtomicIndexer(pt.Indexer):
    """Builds a :class:`DenseIndex` in a hidden sibling directory and renames it into place when complete.

    A lock file (``.NAME.lock``, held for the whole build) makes a second build into the same path fail at once
    instead of replacing the first. The kernel releases it when its process dies, so whoever takes it knows that every
    ``.NAME.building-*`` directory is left over from a dead build, and settles it (:func:`_settle`).
    """

    def __init__(self, index: DenseIndex, mode: str = 'create'):
        if mode not in ('create', 'overwrite'):
            raise ValueError(f"mode must be 'create' or 'overwrite', not {mode!r}")
        self.dense_index, self.mode = index, mode
        # what `encoder >> indexer` binds to: for an overwrite, the new index, not the one it replaces
        self.flex_index = index if mode == 'create' else _Replacement(index.index_path, verbose=index.verbose)
        self.flex_index._encoder_metadata = index._encoder_metadata

    def index_inputs(self):
        return [['docno', 'doc_vec']]

    def index(self, inp) -> DenseIndex:
        path = Path(self.dense_index.index_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _build_lock(path):
            _settle_all(path)
            if path.exists() and self.mode == 'create':
                raise FileExistsError(f'{path} already exists; use index.indexer(mode="overwrite") '
                                      '(CLI: --overwrite) to replace it')
            if isinstance(inp, pd.DataFrame):
                inp = inp.to_dict(orient='records')
            inp = iter(inp)
            first = next(inp, None)
            if first is None:
                raise ValueError(f'no documents to index into {path}')
            building = Path(tempfile.mkdtemp(dir=path.parent, prefix=_building_prefix(path)))
            try:
                FlexIndexer(FlexIndex(building / 'index', verbose=self.dense_index.verbose)).index(
                    _checked_docs(itertools.chain([first], inp)))
                meta = json.loads((building / 'index' / 'pt_meta.json').read_text())
                meta.update(self.flex_index._encoder_metadata or {}, format=DenseIndex.ARTIFACT_FORMAT,
                            package_hint=DenseIndex.ARTIFACT_PACKAGE_HINT)
                (building / 'index' / 'pt_meta.json').write_text(json.dumps(meta, indent=1))
                if path.exists():  # overwrite: the old index stays until the new one is complete
                    os.replace(path, building / 'old')
                os.replace(building / 'index', path)
            finally:
                _settle(building, path, restore=['old'])  # a failed swap puts the old index back
        self.dense_index._forget_files()
        return self.dense_index


def _building_prefix(path: Path) -> str:
    return f'.{path.name}.building-'


def _lock_path(path: Path) -> Path:
    return path.parent / f'.{path.name}.lock'


@contextlib.contextmanager
def _build_lock(path: Path, *, required: bool = True) -> Iterator[bool]:
    """Hold ``.NAME.lock`` beside ``path`` for the block; yields whether it is held. Held by another process, it is
    a FileExistsError naming that process, or (``required=False``: the recovery on open, which must not stand in a
    build's way) a False."""
    import fcntl
    lock = _lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors='replace').strip() or '?'
            os.close(fd)
            if required:
                raise FileExistsError(f'{path} is being built by another process (pid {owner}); wait for it to '
                                      'finish or build into another path') from None
            fd = None
            break
        if os.path.exists(lock) and os.stat(lock).st_ino == os.fstat(fd).st_ino:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            break
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
    try:
        yield fd is not None
    finally:
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            os.close(fd)


def _settle(building: Path, path: Path, restore: Sequence[str]) -> None:
    """If ``path`` is missing, move the first of ``restore`` found in ``building`` there; then delete ``building``.

    ``building`` stays when ``path`` is still missing and it holds a copy to restore, for the next open to retry."""
    for name in restore:
        if not path.exists() and (building / name).exists():
            with contextlib.suppress(OSError):
                os.replace(building / name, path)
    if path.exists() or not any((building / name).exists() for name in restore):
        shutil.rmtree(building, ignore_errors=True)


def _building_dirs(path: Path) -> list[Path]:
    prefix = _building_prefix(path)  # then mkdtemp's random [a-z0-9_]: not another index's '.NAME.x.building-'
    return [d for d in path.parent.iterdir() if d.name.startswith(prefix) and '.' not in d.name[len(prefix):]]


def _settle_all(path: Path) -> None:
    """Settle what dead builds of ``path`` left (call with the lock held). An overwrite killed between its renames
    left the complete new index and the old one: the swap is completed (restoring the old one if it cannot be)."""
    for building in _building_dirs(path):
        _settle(building, path, restore=['index', 'old'] if (building / 'old').exists() else [])


def _recover(path: Path) -> None:
    """On open: a missing index may be an overwrite that a killed process left half done; complete it unless a
    live build holds the lock (or the directory is read-only)."""
    if path.exists() or not path.parent.is_dir() or not _building_dirs(path):
        return
    with contextlib.suppress(OSError), _build_lock(path, required=False) as locked:
        if locked:
            _settle_all(path)


def shard_corpus(corpus: Iterable[dict], shard: int, num_shards: int) -> Iterator[dict]:
    """The documents of shard ``shard`` of ``num_shards`` (round robin), for encoding in separate processes.

    Index each shard separately, then :meth:`DenseIndex.merge` the shard indexes in order 0..N-1; the result
    equals the index built from the whole corpus in one process.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f'shard must be in 0..{num_shards - 1}, not {shard}')
    return itertools.islice(corpus, shard, None, num_shards)


# --- retrieval -------------------------------------------------------------------------------------------------


class FaissRetriever(pt.Transformer):
    """Search over a :class:`DenseIndex`, optionally restricted to a subset of its documents: exact
    (``method='flat'``: machine-independent scores, trec_eval's tie order) or approximate with FAISS (HNSW,
    IVF-PQ)."""

    def __init__(self, index: DenseIndex, *, num_results: int | None = 1000, method: str = 'flat',
                 docnos: Iterable[str] | None = None, drop_query_vec: bool = False, **params):
        if method not in METHODS:
            raise ValueError(f'unknown method {method!r}; valid: {", ".join(METHODS)}')
        if num_results is not None and (not isinstance(num_results, numbers.Integral)
                                        or isinstance(num_results, bool) or num_results < 1):
            raise ValueError(f'num_results must be a positive integer (or None: rank every document), '
                             f'not {num_results!r}')
        self.flex_index = index
        self.num_results, self.method, self.drop_query_vec = num_results, method, drop_query_vec
        self.params = _method_params(method, params, len(index))
        self.build_params, self.search_params = _split_params(self.params)
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

    def subtransformers(self) -> dict:
        return {}  # the index is data, not a stage to walk

    def _key(self) -> tuple:
        subset = None if self.docids is None else self.docids.tobytes()
        return (self.flex_index.index_path, self.method, tuple(sorted(self.params.items())), self.num_results,
                subset, self.drop_query_vec)

    def __eq__(self, other) -> bool:
        if not isinstance(other, FaissRetriever):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((FaissRetriever, *self._key()))

    def __repr__(self) -> str:
        params = ''.join(f', {k}={v!r}' for k, v in self.params.items())
        subset = '' if self.docids is None else f', docnos=<{len(self.docids)} docs>'
        return (f'{self.flex_index!r}.retriever(num_results={self.num_results!r}, '
                f'method={self.method!r}{params}{subset})')


def _method_params(method: str, params: dict, count: int) -> dict:
    """The parameters of a method, defaulted (build-time ones first); unknown ones are refused."""
    defaults = {
        'flat': {},
        'hnsw': {'neighbours': 32, 'ef_construction': 40, 'ef_search': 64},
        'ivfpq': {'n_list': max(1, int(4 * count ** 0.5)), 'pq_m': 16, 'n_probe': 16},
    }[method]
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f'unknown parameter(s) {", ".join(sorted(unknown))} for method {method!r}; '
                        f'valid: {", ".join(defaults) or "none"}')
    return {k: params.get(k, v) for k, v in defaults.items()}


_SEARCH_PARAMS = {'ef_search': 'efSearch', 'n_probe': 'nprobe'}  # ours -> FAISS's search-time names


def _split_params(params: dict) -> tuple[dict, dict]:
    """Build-time parameters, and search-time ones under FAISS's names."""
    build = {k: v for k, v in params.items() if k not in _SEARCH_PARAMS}
    return build, {_SEARCH_PARAMS[k]: v for k, v in params.items() if k in _SEARCH_PARAMS}


def _retriever(self: DenseIndex, num_results: int | None = 1000, *, method: str = 'flat',
               docnos: Iterable[str] | None = None, drop_query_vec: bool = False, **params) -> FaissRetriever:
    """A retriever over this index (or the subset ``docnos`` of it).

    Args:
        num_results: results per query (a positive integer); ``None`` ranks every (selected) document.
        method: ``'flat'`` (exact inner product), ``'hnsw'`` (params: ``neighbours=32``, ``ef_construction=40``,
            ``ef_search=64``) or ``'ivfpq'`` (params: ``n_list`` (default 4·√N), ``pq_m=16`` bytes per vector,
            ``n_probe=16``). ANN structures are built once and cached in the index directory.
        docnos: restrict the search to these documents (e.g. one language of a pooled corpus).
        drop_query_vec: drop the ``query_vec`` column from the output.
    """
    return FaissRetriever(self, num_results=num_results, method=method, docnos=docnos,
                          drop_query_vec=drop_query_vec, **params)


# Attached as pyterrier-dr attaches its backends to FlexIndex (flex/np_retr.py); the default retriever, so that
# `encoder >> index` and pt.Artifact.load(path).retriever() search the same way.
DenseIndex.retriever = _retriever
