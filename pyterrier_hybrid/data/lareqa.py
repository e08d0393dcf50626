"""ir_datasets registration of LAReQA (XQuAD-R and MLQA-R) in the Mo / Cr / Mul settings.

LAReQA (Roy et al., EMNLP 2020) turns the parallel QA sets XQuAD and MLQA into sentence retrieval: each
question must find its answer sentence in every language. Importing :mod:`pyterrier_hybrid` registers (and so
does ``import pyterrier`` where the package is installed, through its ``pyterrier.modules`` entry point):

``lareqa/xquad-r/{q}``, ``lareqa/mlqa-r/{q}`` (Mul)
    The questions in language ``q`` against the pooled candidates of all languages; a question's qrels are
    its answer sentence in every language that has a parallel version of the question.
``lareqa/xquad-r/{q}/{c}``, ``lareqa/mlqa-r/{q}/{c}`` (Mo when ``q == c``, Cr otherwise)
    The questions in ``q`` against the candidates in ``c`` only.
``lareqa/xquad-r``, ``lareqa/mlqa-r``
    The pooled corpus with the questions of all languages.

Identifiers show the language and the parallel group: query ``de-56beb4343aeaaa14008c925b`` is the German
version of question ``56beb4343aeaaa14008c925b`` (the id shared by all its translations); document
``de-0012-3`` is sentence 3 of paragraph 12 of the German file. In XQuAD-R paragraph numbers are parallel
across languages; in MLQA-R they count paragraphs within one language.

MLQA-R is not fully parallel: a question exists in English and in one to five other languages, so a Mul
question has 2 to 7 relevant sentences, and in ``lareqa/mlqa-r/{q}/{c}`` the questions without a parallel
version in ``c`` have nothing to find. Those questions are left out of that setting's queries (rather than
scored 0); :func:`lareqa_query_counts` reports how many remain for every pair.

Source files are read from ``PYTERRIER_HYBRID_LAREQA_DIR`` (or :func:`set_lareqa_dir`) when set, otherwise
downloaded once from the LAReQA repository into ``ir_datasets.util.home_path()/lareqa``. Every file is
checked against its published sha256.
"""

import functools
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import ir_datasets
from ir_datasets.formats import BaseDocs, BaseQrels, BaseQueries, TrecQrel
from ir_datasets.indices import Docstore

from pyterrier_hybrid.atomic import write_atomically

NAME = 'lareqa'
ENV_DIR = 'PYTERRIER_HYBRID_LAREQA_DIR'

COLLECTIONS: dict[str, tuple[str, ...]] = {
    'xquad-r': ('ar', 'de', 'el', 'en', 'es', 'hi', 'ru', 'th', 'tr', 'vi', 'zh'),
    'mlqa-r': ('ar', 'de', 'en', 'es', 'hi', 'vi', 'zh'),
}

_UPSTREAM = 'https://raw.githubusercontent.com/google-research-datasets/lareqa'
_COMMITS = {
    'xquad-r': '9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c',
    'mlqa-r': '354d67d1cd066854cdfbf5ad0e6105528976141d',
}
SHA256: dict[str, str] = {
    'xquad-r/ar.json': 'c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d',
    'xquad-r/de.json': '16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949',
    'xquad-r/el.json': '163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6',
    'xquad-r/en.json': '7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe',
    'xquad-r/es.json': 'f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de',
    'xquad-r/hi.json': 'ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872',
    'xquad-r/ru.json': '7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1',
    'xquad-r/th.json': 'c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4',
    'xquad-r/tr.json': 'f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94',
    'xquad-r/vi.json': 'e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995',
    'xquad-r/zh.json': '80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed',
    'mlqa-r/ar.json': '2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137',
    'mlqa-r/de.json': 'ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886',
    'mlqa-r/en.json': 'fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4',
    'mlqa-r/es.json': '70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7',
    'mlqa-r/hi.json': '4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654',
    'mlqa-r/vi.json': '9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85',
    'mlqa-r/zh.json': '57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc',
}


class LareqaDoc(NamedTuple):
    """A candidate sentence, with the paragraph it comes from."""
    doc_id: str
    text: str
    context: str
    lang: str

    def default_text(self) -> str:
        """The candidate sentence (ir_datasets' text accessor)."""
        return self.text


class LareqaQuery(NamedTuple):
    """A question; ``query_id`` is ``{lang}-{parallel question id}``.

    ``text`` is the only field, so PyTerrier's ``get_topics()`` names it ``query`` as for any one-field collection
    (a second field would leave the topics without a ``query`` column). The language is the id's prefix: ``lang``
    here, ``queries_lang()`` for a one-language id, ``topics['qid'].str.split('-').str[0]`` in a DataFrame."""
    query_id: str
    text: str

    @property
    def lang(self) -> str:
        """The question's language, from its id."""
        return self.query_id.split('-', 1)[0]

    def default_text(self) -> str:
        """The question (ir_datasets' text accessor)."""
        return self.text


class ChecksumError(ValueError):
    """A LAReQA source file does not have its published sha256."""


# --- sources -----------------------------------------------------------------------------------------------------

_local_dir: Path | None = None


def set_lareqa_dir(path: str | os.PathLike | None) -> None:
    """Read LAReQA files from ``path`` (laid out as ``xquad-r/*.json``, ``mlqa-r/*.json``); ``None`` resets."""
    global _local_dir
    _local_dir = None if path is None else Path(path)
    _load_language.cache_clear()


def _source_dir() -> Path | None:
    if _local_dir is not None:
        return _local_dir
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else None


def _check_name(collection: str, *langs: str) -> None:
    """Raise a KeyError that lists the valid choices for an unknown collection or language."""
    if collection not in COLLECTIONS:
        raise KeyError(f'unknown LAReQA collection {collection!r}; valid: {", ".join(COLLECTIONS)}')
    for lang in langs:
        if lang not in COLLECTIONS[collection]:
            valid = ', '.join(COLLECTIONS[collection])
            raise KeyError(f'unknown language {lang!r} for {NAME}/{collection}; valid: {valid}')


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, rel: str) -> None:
    actual = _sha256(path)
    if actual != SHA256[rel]:
        raise ChecksumError(f'{path}: sha256 is {actual}, expected {SHA256[rel]} (the published LAReQA {rel})')


def _download(rel: str, target: Path) -> None:
    """Download ``rel`` to ``target`` and verify it; a failed or corrupt download leaves nothing behind."""
    url = f'{_UPSTREAM}/{_COMMITS[rel.split("/")[0]]}/{rel}'

    def fetch(tmp: Path) -> None:
        with open(tmp, 'wb') as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        _verify(tmp, rel)

    try:
        write_atomically(target, fetch)
    except urllib.error.URLError as error:
        raise ConnectionError(f'cannot download {url} ({error.reason}); offline, set {ENV_DIR} to a directory '
                              'holding xquad-r/*.json and mlqa-r/*.json') from error


def source_path(collection: str, lang: str) -> Path:
    """The verified local path of one LAReQA file, downloading it first when no local directory is set."""
    _check_name(collection, lang)
    rel = f'{collection}/{lang}.json'
    local = _source_dir()
    if local is not None:
        if not local.is_dir():
            raise FileNotFoundError(
                f'LAReQA directory {local} does not exist; set {ENV_DIR} (or call set_lareqa_dir) to a directory '
                'holding xquad-r/*.json and mlqa-r/*.json, or unset it to download the files')
        path = local / rel
        if not path.is_file():
            raise FileNotFoundError(f'{path} is missing from the LAReQA directory {local} (set by {ENV_DIR})')
    else:
        path = ir_datasets.util.home_path() / NAME / rel
        if not path.is_file():
            _download(rel, path)
    _verify(path, rel)
    return path


# --- parsing -----------------------------------------------------------------------------------------------------

class _Language(NamedTuple):
    """One language file, parsed: its candidates, its questions and each question's answer sentence."""
    docs: tuple[LareqaDoc, ...]
    queries: dict[str, LareqaQuery]  # parallel question id -> query
    answers: dict[str, str]  # parallel question id -> doc_id of the answer sentence


@functools.cache
def _load_language(collection: str, lang: str) -> _Language:
    with open(source_path(collection, lang), encoding='utf-8') as f:
        data = json.load(f)['data']
    docs, queries, answers = [], {}, {}
    paragraphs = (p for article in data for p in article['paragraphs'])
    for p_idx, paragraph in enumerate(paragraphs):
        breaks = paragraph['sentence_breaks']
        doc_ids = [f'{lang}-{p_idx:04d}-{s_idx}' for s_idx in range(len(breaks))]
        docs.extend(LareqaDoc(d, s, paragraph['context'], lang) for d, s in zip(doc_ids, paragraph['sentences']))
        for qa in paragraph['qas']:
            start = qa['answers'][0]['answer_start']
            hits = [d for d, (b, e) in zip(doc_ids, breaks) if b <= start < e]
            if len(hits) != 1:
                raise ValueError(f'lareqa/{collection}/{lang}: answer of {qa["id"]} lies in no single sentence')
            queries[qa['id']] = LareqaQuery(f'{lang}-{qa["id"]}', qa['question'])
            answers[qa['id']] = hits[0]
    return _Language(tuple(docs), queries, answers)


def lareqa_query_counts(collection: str) -> dict[tuple[str, str], int]:
    """Number of questions in language q with an answer in language c, for every (q, c) pair."""
    langs = COLLECTIONS[collection]
    loaded = {lang: _load_language(collection, lang) for lang in langs}
    return {(q, c): len(loaded[q].queries.keys() & loaded[c].answers.keys()) for q in langs for c in langs}


# --- ir_datasets handlers ----------------------------------------------------------------------------------------

class _ListDocstore(Docstore):
    """Random access by doc_id over the (small) in-memory candidate list."""

    def __init__(self, docs_handler: 'LareqaDocs'):
        super().__init__(LareqaDoc)
        self._handler = docs_handler

    @functools.cached_property
    def _by_id(self) -> dict[str, LareqaDoc]:
        return {d.doc_id: d for d in self._handler.docs_iter()}

    def get_many_iter(self, doc_ids):
        for doc_id in doc_ids:
            if doc_id in self._by_id:
                yield self._by_id[doc_id]


class LareqaDocs(BaseDocs):
    """The candidate sentences of some languages of a collection."""

    def __init__(self, collection: str, langs: tuple[str, ...]):
        self._collection, self._langs = collection, langs

    def docs_iter(self) -> Iterator[LareqaDoc]:
        for lang in self._langs:
            yield from _load_language(self._collection, lang).docs

    def docs_count(self) -> int:
        return sum(len(_load_language(self._collection, lang).docs) for lang in self._langs)

    def docs_cls(self):
        return LareqaDoc

    def docs_store(self, field='doc_id'):
        return _ListDocstore(self)

    def docs_namespace(self):
        return f'{NAME}/{self._collection}'

    def docs_lang(self):
        return self._langs[0] if len(self._langs) == 1 else None


class LareqaQueries(BaseQueries):
    """The questions of one language, optionally only those answerable in ``answer_langs``."""

    def __init__(self, collection: str, langs: tuple[str, ...], answer_langs: tuple[str, ...]):
        self._collection, self._langs, self._answer_langs = collection, langs, answer_langs

    def queries_iter(self) -> Iterator[LareqaQuery]:
        answerable = set().union(*(_load_language(self._collection, c).answers for c in self._answer_langs))
        for lang in self._langs:
            for qid, query in _load_language(self._collection, lang).queries.items():
                if qid in answerable:
                    yield query

    def queries_cls(self):
        return LareqaQuery

    def queries_namespace(self):
        return f'{NAME}/{self._collection}'

    def queries_lang(self):
        return self._langs[0] if len(self._langs) == 1 else None


class LareqaQrels(BaseQrels):
    """For each question in ``langs``, its answer sentence in each of ``answer_langs`` where it has one."""

    def __init__(self, collection: str, langs: tuple[str, ...], answer_langs: tuple[str, ...]):
        self._collection, self._langs, self._answer_langs = collection, langs, answer_langs

    def qrels_iter(self) -> Iterator[TrecQrel]:
        for lang in self._langs:
            for qid, query in _load_language(self._collection, lang).queries.items():
                for c in self._answer_langs:
                    doc_id = _load_language(self._collection, c).answers.get(qid)
                    if doc_id is not None:
                        yield TrecQrel(query.query_id, doc_id, 1, '0')

    def qrels_cls(self):
        return TrecQrel

    def qrels_defs(self):
        return {1: 'the sentence containing the answer to the (parallel) question'}


def _dataset(collection: str, query_langs: tuple[str, ...], doc_langs: tuple[str, ...]) -> ir_datasets.Dataset:
    return ir_datasets.Dataset(
        LareqaDocs(collection, doc_langs),
        LareqaQueries(collection, query_langs, doc_langs),
        LareqaQrels(collection, query_langs, doc_langs),
    )


def _unknown_id(dataset_id: str, groups: tuple[str, ...]) -> ir_datasets.Dataset:
    """Pattern fallback for ids that were not registered: explain which part is wrong."""
    collection, *langs = groups[0].split('/')
    _check_name(collection, *langs)
    raise KeyError(f'{dataset_id!r} is not a LAReQA id; valid forms: {NAME}/COLLECTION[/QUERY_LANG[/DOC_LANG]]')


def _register() -> None:
    """Register every LAReQA id once (ir_datasets refuses duplicates, and this module may be reloaded)."""
    if f'{NAME}/xquad-r' in ir_datasets.registry:
        return
    for collection, langs in COLLECTIONS.items():
        ir_datasets.registry.register(f'{NAME}/{collection}', _dataset(collection, langs, langs))
        for q in langs:
            ir_datasets.registry.register(f'{NAME}/{collection}/{q}', _dataset(collection, (q,), langs))
            for c in langs:
                ir_datasets.registry.register(f'{NAME}/{collection}/{q}/{c}', _dataset(collection, (q,), (c,)))
    ir_datasets.registry.register_pattern(rf'^{NAME}/(.+)$', _unknown_id)


_register()
