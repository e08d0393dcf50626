"""Training-free removal of language bias from multilingual embeddings, between the encoder and the index.

Multilingual encoders place each language in its own region of the vector space, so in a pooled multilingual
corpus (LAReQA's Mul setting) a query ranks the passages of its own language first whatever they say: the language
bias that rank distance measures. Much of that language identity is an offset shared by all texts of a language.
:class:`LanguageBiasRemoval` takes it out of query and document vectors, with statistics estimated from unlabelled
text (:class:`LanguageMeans`): no training and no relevance labels. In a first probe on untrained
multilingual-e5-small, subtracting each language's corpus mean took XQuAD-R from AP Mo .800 / Cr .640 / Mul .298
(rank distance 1215) to .794 / .679 / .542 (537); benchmarks/bias_removal.py measures every variant.

The language of each text comes from a column (``lang``), which LAReQA fills from the dataset itself
(:class:`~pyterrier_hybrid.data.lareqa.LareqaDoc` ``.lang``, ``LareqaQuery.lang``): the language a text was
written in, exact by construction. A language-identification model would be a guess, and its errors are worst on
the short questions and sentences of LAReQA (shared scripts, names, numbers); a wrong guess silently centres a text
with another language's mean and shifts every number measured on it. For text without a language field, a
language-id package can fill the column in front of the transformer, e.g. ``pt.apply.lang(lambda row:
langid.classify(row['text'])[0]) >> removal``.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyterrier as pt

from pyterrier_hybrid.atomic import write_atomically

SIDES = ('doc', 'query')
METHODS = ('centre', 'project', 'centre+project')
_FORMAT = 'pyterrier_hybrid.language_means'
_ARRAYS, _META = 'language_means.npz', 'language_means.json'


class UnknownLanguageError(LookupError):
    """A text in a language that the fitted :class:`LanguageMeans` has no estimate for."""


class MissingLanguageError(pt.validate.InputValidationError):
    """A frame without the language column that centring needs (an InputValidationError, so pt.inspect copes)."""

    def __str__(self) -> str:
        return self.args[0]


class LanguageMeans:
    """The mean vector of each language's documents and, optionally, of each language's queries.

    Fit it on what a user really has at indexing time: the corpus vectors with the language of each document, and
    where available queries of a language (a query log, or unlabelled test questions: transductive). Store it
    beside the index with :meth:`save`.

    .. code-block:: python

        index = ph.DenseIndex('xquad-r.index')
        lang = {d.doc_id: d.lang for d in ir_datasets.load('lareqa/xquad-r').docs_iter()}
        means = LanguageMeans.fit((d['doc_vec'], lang[d['docno']]) for d in index.get_corpus_iter(verbose=False))
        means.save(index.index_path / 'language_means')
    """

    def __init__(self, means: Mapping[str, Mapping[str, np.ndarray]], counts: Mapping[str, Mapping[str, int]]):
        self.means = {side: {lang: np.asarray(v, dtype=np.float64) for lang, v in means.get(side, {}).items()}
                      for side in SIDES}
        self.counts = {side: {lang: int(n) for lang, n in counts.get(side, {}).items()} for side in SIDES}
        dims = {v.shape for side in SIDES for v in self.means[side].values()}
        if not self.means['doc'] or len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f'LanguageMeans needs document means, all vectors of one dimension; got shapes '
                             f'{sorted(dims) or "none"}')
        self.dimension = int(dims.pop()[0])

    @classmethod
    def fit(cls, docs: Iterable[tuple[np.ndarray, str]],
            queries: Iterable[tuple[np.ndarray, str]] | None = None) -> LanguageMeans:
        """Average ``(vector, lang)`` pairs per language: documents, and optionally queries (streamed, float64)."""
        sums, counts = {}, {}
        for side, pairs in (('doc', docs), ('query', () if queries is None else queries)):
            sums[side], counts[side] = {}, {}
            for vector, lang in pairs:
                if not isinstance(lang, str) or not lang:
                    raise ValueError(f'a {side} vector has no language ({lang!r}); every text needs its language')
                if lang not in sums[side]:
                    sums[side][lang], counts[side][lang] = np.zeros(np.shape(vector), dtype=np.float64), 0
                if np.shape(vector) != sums[side][lang].shape:
                    raise ValueError(f'{side} vectors of different shapes: {np.shape(vector)} and '
                                     f'{sums[side][lang].shape}')
                sums[side][lang] += vector
                counts[side][lang] += 1
        if not counts['doc']:
            raise ValueError('no document vectors to fit LanguageMeans on')
        means = {side: {lang: total / counts[side][lang] for lang, total in sums[side].items()} for side in SIDES}
        return cls(means, counts)

    def languages(self, side: str = 'doc') -> list[str]:
        """The languages with a ``side`` (``'doc'`` or ``'query'``) mean, sorted."""
        return sorted(self.means[_check_side(side)])

    def matrix(self, side: str = 'doc') -> np.ndarray:
        """The ``side`` means stacked in :meth:`languages` order, ``(languages, dimension)``."""
        return np.stack([self.means[side][lang] for lang in self.languages(side)]) if self.means[side] \
            else np.zeros((0, self.dimension))

    @property
    def digest(self) -> str:
        """sha256 of the languages, counts and means: equal digests, equal statistics."""
        if not hasattr(self, '_digest'):
            digest = hashlib.sha256(json.dumps(self.counts, sort_keys=True).encode())
            for side in SIDES:
                digest.update(np.ascontiguousarray(self.matrix(side)).tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    # --- storage ---------------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``language_means.npz`` (the means) and ``language_means.json`` (languages, counts, the npz's
        sha256) into ``directory``, each atomically; the json goes last and :meth:`load` checks the sha256, so an
        interrupted save is reported rather than read as a mix of old and new statistics."""
        directory = Path(directory)
        arrays = {side: self.matrix(side) for side in SIDES}

        def write_arrays(tmp: Path) -> None:
            with open(tmp, 'wb') as f:
                np.savez(f, **arrays)
        write_atomically(directory / _ARRAYS, write_arrays)
        meta = {'format': _FORMAT, 'version': 1, 'dimension': self.dimension,
                'languages': {side: self.languages(side) for side in SIDES},
                'counts': {side: [self.counts[side][lang] for lang in self.languages(side)] for side in SIDES},
                'npz_sha256': _sha256(directory / _ARRAYS), 'digest': self.digest}
        write_atomically(directory / _META, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + '\n'))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> LanguageMeans:
        """Read what :meth:`save` wrote; a missing, foreign or inconsistent file is named in the error."""
        directory = Path(directory)
        for name in (_META, _ARRAYS):
            if not (directory / name).is_file():
                raise FileNotFoundError(f'{directory / name} is missing; write it with LanguageMeans.save')
        try:
            meta = json.loads((directory / _META).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f'{directory / _META} is not valid JSON ({error}); save the means again') from error
        if not isinstance(meta, dict) or meta.get('format') != _FORMAT:
            raise ValueError(f'{directory / _META} does not describe language means (format {_FORMAT!r})')
        if _sha256(directory / _ARRAYS) != meta['npz_sha256']:
            raise ValueError(f'{directory / _ARRAYS} does not match {directory / _META} (an interrupted or mixed '
                             'save?); save the means again')
        with np.load(directory / _ARRAYS) as arrays:
            means = {side: dict(zip(meta['languages'][side], arrays[side])) for side in SIDES}
        counts = {side: dict(zip(meta['languages'][side], meta['counts'][side])) for side in SIDES}
        return cls(means, counts)

    def __eq__(self, other) -> bool:
        return isinstance(other, LanguageMeans) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return (f'<LanguageMeans doc={",".join(self.languages("doc"))} query={",".join(self.languages("query"))} '
                f'dimension={self.dimension} digest={self.digest[:12]}>')


class LanguageBiasRemoval(pt.Transformer):
    """Removes per-language directions from ``doc_vec`` and ``query_vec``, then renormalises.

    Methods, and the data each needs:

    ``'centre'``
        Subtract the mean of the text's language. Indexing: the corpus vectors and each document's language
        (:meth:`LanguageMeans.fit`). Query time: each query's language in the ``lang`` column; its vector is
        centred with the corpus mean of that language, or with ``query_means='queries'`` with the mean of queries
        in that language (which the fit then needs: ``LanguageMeans.fit(docs, queries)``).
    ``'project'``
        Project out the ``k`` principal directions of the centred document-language means (the subspace in which
        the languages differ, as LIR does; centred, so the direction common to all languages stays). Indexing:
        the corpus vectors and languages. Query time: nothing: one linear map for every text, no ``lang`` column.
    ``'centre+project'``
        Centring, then the projection; needs what centring needs.

    Put it between the encoder and the index on both sides (a LAReQA corpus already carries ``lang``; a LAReQA
    question's language is the prefix of its id):

    .. code-block:: python

        removal = LanguageBiasRemoval(LanguageMeans.load('xquad-r.index/language_means'))
        (encoder >> removal >> index).index(dataset.get_corpus_iter())
        topics = dataset.get_topics()
        topics = topics.assign(lang=topics['qid'].str.split('-').str[0])  # qid, query, lang
        results = (encoder >> removal >> index.retriever())(topics)

    Args:
        means: the fitted statistics.
        method: ``'centre'``, ``'project'`` or ``'centre+project'``.
        k: directions to project out (1 to languages - 1; default all the means span); projection methods only.
        query_means: which mean centres a query: ``'docs'`` (the corpus mean of its language) or ``'queries'``.
        lang_column: the column holding each text's language.
        lang_map: languages to centre with another language's estimate, e.g. ``{'pt': 'es'}`` when the means
            have no Portuguese.
        normalize: renormalise to unit length (an inner-product index serving cosine similarity needs it).
    """

    def __init__(self, means: LanguageMeans, method: str = 'centre', *, k: int | None = None,
                 query_means: str = 'docs', lang_column: str = 'lang', lang_map: Mapping[str, str] | None = None,
                 normalize: bool = True):
        check_options(method=method, k=k, query_means=query_means)
        if query_means == 'queries' and not means.means['query']:
            raise ValueError("query_means='queries' needs query means: fit with LanguageMeans.fit(docs, queries)")
        self.means, self.method, self.query_means = means, method, query_means
        self.lang_column, self.lang_map, self.normalize = lang_column, dict(lang_map or {}), normalize
        self.directions = _language_directions(means, k) if 'project' in method else np.zeros((0, means.dimension))
        self.k = len(self.directions) if 'project' in method else None

    @property
    def needs_language(self) -> bool:
        """Whether each text's language is needed (centring); projection alone is the same for every text."""
        return 'centre' in self.method

    def apply(self, vectors: np.ndarray, langs: Sequence[str] | None = None, side: str = 'doc') -> np.ndarray:
        """The debiased float32 vectors of ``vectors`` (one row per text, ``langs`` its languages)."""
        side = _check_side(side)
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != self.means.dimension:
            raise ValueError(f'vectors of shape {vectors.shape} do not match the {self.means.dimension}-dimensional '
                             'language means (fitted on another encoder?)')
        if self.needs_language:
            if langs is None:
                raise ValueError(f'method {self.method!r} needs the language of each vector')
            vectors = vectors - self._centres(langs, side)
        if len(self.directions):
            vectors = vectors - (vectors @ self.directions.T) @ self.directions
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms > 0, norms, 1)
        return vectors.astype(np.float32)

    def _centres(self, langs: Sequence[str], side: str) -> np.ndarray:
        """One mean per text: the language's query or document mean, after ``lang_map``."""
        source = 'query' if side == 'query' and self.query_means == 'queries' else 'doc'
        langs = pd.Series(list(langs), dtype=object)
        if langs.isna().any() or (langs == '').any():
            raise ValueError(f'{int((langs.isna() | (langs == "")).sum())} text(s) without a language in '
                             f'{self.lang_column!r}; fill it for every text')
        codes, unique = pd.factorize(langs.map(lambda lang: self.lang_map.get(lang, lang)))
        table = self.means.means[source]
        missing = [lang for lang in unique if lang not in table]
        if missing:
            what = {'doc': 'document', 'query': 'query'}[source]
            known = ', '.join(sorted(table))
            raise UnknownLanguageError(
                f'no {what} mean for language(s) {", ".join(map(repr, missing))}; the means know: {known}. Fit '
                f'LanguageMeans on {what}s in {missing[0]!r}, or map it to a fitted language with '
                f'lang_map={{{missing[0]!r}: {sorted(table)[0]!r}}}')
        return np.stack([table[lang] for lang in unique])[codes]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        with pt.validate.any(inp) as v:
            v.columns(includes=['query_vec'], mode='query')
            v.columns(includes=['doc_vec'], mode='doc')
        if self.needs_language:
            try:
                pt.validate.columns(inp, includes=[self.lang_column])
            except pt.validate.InputValidationError as error:
                raise MissingLanguageError(self._missing_language_message(inp), error.modes) from None
        if not len(inp):
            return inp
        langs = inp[self.lang_column].tolist() if self.needs_language else None
        return inp.assign(**{f'{side}_vec': list(self.apply(np.stack(inp[f'{side}_vec']), langs, side))
                             for side in SIDES if f'{side}_vec' in inp.columns})

    def _missing_language_message(self, inp: pd.DataFrame) -> str:
        return (f'{type(self).__name__}(method={self.method!r}) needs each text\'s language in column '
                f'{self.lang_column!r}, which the frame lacks (columns: {", ".join(map(str, inp.columns))}). For '
                "LAReQA, docs carry 'lang' and a question's language is its qid's prefix "
                "(topics.assign(lang=topics['qid'].str.split('-').str[0])); other text can get it from a "
                "language-id model (pt.apply.lang(...)); or use method='project', which needs no language")

    def _key(self) -> tuple:
        return (self.means, self.method, self.k, self.query_means, self.lang_column,
                tuple(sorted(self.lang_map.items())), self.normalize)

    def __eq__(self, other) -> bool:
        return isinstance(other, LanguageBiasRemoval) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        options = [f'method={self.method!r}']
        options += [f'k={self.k}'] if self.k is not None else []
        options += [f'query_means={self.query_means!r}'] if self.query_means != 'docs' else []
        options += [f'lang_column={self.lang_column!r}'] if self.lang_column != 'lang' else []
        options += [f'lang_map={self.lang_map!r}'] if self.lang_map else []
        options += ['normalize=False'] if not self.normalize else []
        return f'LanguageBiasRemoval({self.means!r}, {", ".join(options)})'


def check_options(method: str = 'centre', k: int | None = None, query_means: str = 'docs') -> None:
    """Refuse a combination of :class:`LanguageBiasRemoval` options that cannot work, before anything is fitted
    (an experiment file is checked with it at validation)."""
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}; valid: {", ".join(METHODS)}')
    if query_means not in ('docs', 'queries'):
        raise ValueError(f"query_means must be 'docs' or 'queries', not {query_means!r}")
    if query_means == 'queries' and 'centre' not in method:
        raise ValueError(f"query_means='queries' centres queries; method {method!r} does not centre")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f'k is a number of directions >= 1, not {k!r}')
    if k is not None and 'project' not in method:
        raise ValueError(f'k is the number of directions to project out; method {method!r} does not project')


def _language_directions(means: LanguageMeans, k: int | None) -> np.ndarray:
    """The top-k right singular vectors of the centred document-language means, ``(k, dimension)``, orthonormal."""
    matrix = means.matrix('doc')
    if len(matrix) < 2:
        raise ValueError(f'projection needs the means of at least two languages; fitted: {means.languages("doc")}')
    centred = matrix - matrix.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int((singular > singular[0] * 1e-9).sum()) if singular[0] > 0 else 0
    k = rank if k is None else k
    if not 1 <= k <= rank:
        raise ValueError(f'k must be in 1..{rank} (the centred means of {len(matrix)} languages span {rank} '
                         f'directions), not {k}')
    return vt[:k]


def _check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be 'doc' or 'query', not {side!r}")
    return side


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
