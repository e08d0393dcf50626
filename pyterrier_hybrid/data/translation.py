"""Translate-train: English QA data machine-translated into the training languages (arXiv 2408.10536's recipe).

:func:`english_items` reads English QA pairs from an ir_datasets id (queries + qrels, or docpairs), from the
package's JSONL format or from a Hugging Face ``datasets`` dataset (``hf:<name or path>``). A translator turns
texts from one language into another: :class:`Seq2SeqTranslator` runs a Hugging Face MT model (NLLB, M2M100 or
Marian/opus-mt) in length-sorted batches; :class:`LexiconTranslator` is a cheap offline stand-in that replaces
words one by one from MUSE lexicons (it is *not* machine translation: word order and inflection stay English).
:func:`translate_train` writes the parallel training set (items aligned by id, ready for
:func:`pyterrier_hybrid.train`) with a manifest, caching every translation in SQLite per (text, model,
language) so that a rerun, or a run after a crash, translates only what is missing; ``shard=(i, N)`` translates
every N-th item for one of N processes and :func:`merge_translations` joins the shards into the one-run output.

Documented behaviour: an empty text translates to an empty text without a model call; a text longer than
``max_length`` tokens is truncated to its first ``max_length`` tokens (counted in the manifest as ``truncated``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from pyterrier_hybrid.atomic import write_atomically

from .code_switching import CodeSwitcher, Lexicon
from .items import ParallelItem, irds_items, read_items, write_items

# ISO 639-1 -> FLORES-200 codes used by NLLB (a code already in FLORES form passes through).
NLLB_CODES = {
    'af': 'afr_Latn', 'ar': 'arb_Arab', 'bg': 'bul_Cyrl', 'bn': 'ben_Beng', 'ca': 'cat_Latn', 'cs': 'ces_Latn',
    'da': 'dan_Latn', 'de': 'deu_Latn', 'el': 'ell_Grek', 'en': 'eng_Latn', 'es': 'spa_Latn', 'et': 'est_Latn',
    'fa': 'pes_Arab', 'fi': 'fin_Latn', 'fr': 'fra_Latn', 'he': 'heb_Hebr', 'hi': 'hin_Deva', 'hu': 'hun_Latn',
    'id': 'ind_Latn', 'it': 'ita_Latn', 'ja': 'jpn_Jpan', 'ko': 'kor_Hang', 'nl': 'nld_Latn', 'no': 'nob_Latn',
    'pl': 'pol_Latn', 'pt': 'por_Latn', 'ro': 'ron_Latn', 'ru': 'rus_Cyrl', 'sv': 'swe_Latn', 'sw': 'swh_Latn',
    'te': 'tel_Telu', 'th': 'tha_Thai', 'tr': 'tur_Latn', 'uk': 'ukr_Cyrl', 'ur': 'urd_Arab', 'vi': 'vie_Latn',
    'yo': 'yor_Latn', 'zh': 'zho_Hans',
}
_MARIAN_PAIR = re.compile(r'opus-mt-(?P<src>[a-z]{2,3})-(?P<tgt>[a-z]{2,3})$')


class UnsupportedLanguageError(ValueError):
    """The translation model cannot produce (or read) the language asked for."""


class Translator(Protocol):
    """Translates texts from ``src`` to ``tgt`` (ISO 639-1 codes); ``name`` keys the cache.

    Called with no texts, it only checks the pair, raising :class:`UnsupportedLanguageError` when it cannot.
    """
    name: str

    def __call__(self, texts: Sequence[str], src: str, tgt: str) -> list[str]: ...


class Seq2SeqTranslator:
    """A Hugging Face seq2seq MT model, batched by length, on the GPU when there is one.

    Args:
        model: Hub id or local path. For Marian's per-pair models, ``{src}`` and ``{tgt}`` in the name are
            filled in per language pair (``Helsinki-NLP/opus-mt-{src}-{tgt}``).
        batch_size: texts per ``generate`` call.
        max_length: input tokens kept per text (longer texts are truncated) and the cap on output tokens.
        sort_by_length: batch texts of similar length together (less padding); off only to measure the gain.
        num_beams: beam size (1: greedy).

    ``generate_calls``, ``decoder_steps`` (summed over calls) and ``input_tokens`` (padding included) count the
    work done; ``truncated`` counts texts cut to ``max_length``.
    """

    def __init__(self, model: str | os.PathLike, *, batch_size: int = 32, max_length: int = 256,
                 sort_by_length: bool = True, num_beams: int = 1, device: str | None = None):
        import torch
        self.name = str(model)
        self.batch_size, self.max_length, self.num_beams = batch_size, max_length, num_beams
        self.sort_by_length = sort_by_length
        self.device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        self.generate_calls = self.truncated = 0
        self.decoder_steps = self.input_tokens = 0  # work done, padding included: what length sorting saves
        self._models: dict[str, tuple] = {}
        self._codes: dict[tuple[str, str], tuple[str | None, str | None]] = {}

    def _load(self, src: str, tgt: str):
        name = self.name.format(src=src, tgt=tgt)
        if name not in self._models:
            import torch
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(name)
            dtype = torch.float16 if self.device.startswith('cuda') else torch.float32
            model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=dtype).to(self.device).eval()
            self._models[name] = (tokenizer, model)
        return name, *self._models[name]

    def language_codes(self, src: str, tgt: str) -> tuple[str | None, str | None]:
        """The model's codes for ``src`` and ``tgt`` (None where the family has none, as Marian's pair models).

        Raises:
            UnsupportedLanguageError: naming the model and the language.
        """
        if (src, tgt) not in self._codes:  # looked up once per pair: a vocabulary (NLLB: 256k tokens) per call adds up
            self._codes[src, tgt] = self._language_codes(src, tgt)
        return self._codes[src, tgt]

    def _language_codes(self, src: str, tgt: str) -> tuple[str | None, str | None]:
        name, tokenizer, model = self._load(src, tgt)
        vocab = tokenizer.get_vocab()
        family = model.config.model_type
        if family == 'marian':
            multi = sorted(t[2:-2] for t in vocab if t.startswith('>>') and t.endswith('<<'))
            if multi:  # a multi-target model (opus-mt-en-mul, ...): a >>tgt<< token picks the language
                if f'>>{tgt}<<' not in vocab:
                    raise UnsupportedLanguageError(f'{name} cannot translate into {tgt!r}; it knows '
                                                   f'{", ".join(multi)}')
                return None, f'>>{tgt}<<'
            match = _MARIAN_PAIR.search(name.rstrip('/'))
            if match and (match['src'], match['tgt']) != (src, tgt):
                raise UnsupportedLanguageError(f'{name} translates {match["src"]}->{match["tgt"]}, not {src}->{tgt}; '
                                               'use a per-pair name such as Helsinki-NLP/opus-mt-{src}-{tgt}')
            return None, None
        if family == 'm2m_100':
            nllb = 'eng_Latn' in vocab
            codes = [NLLB_CODES.get(lang, lang) if nllb else f'__{lang}__' for lang in (src, tgt)]
            for lang, code in zip((src, tgt), codes):
                if code not in vocab:
                    known = sorted(NLLB_CODES) if nllb else sorted(t[2:-2] for t in vocab if re.fullmatch(
                        r'__[a-z]{2,3}__', t))
                    raise UnsupportedLanguageError(f'{name} does not support {lang!r} (looked for {code}); '
                                                   f'languages: {", ".join(known)}')
            return codes[0], codes[1]
        raise UnsupportedLanguageError(f'{name} is a {family!r} model; supported MT families: NLLB, M2M100, Marian')

    def __call__(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        import torch
        src_code, tgt_code = self.language_codes(src, tgt)
        _, tokenizer, model = self._load(src, tgt)
        if src_code and hasattr(tokenizer, 'src_lang'):
            tokenizer.src_lang = src_code
        out = [''] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]  # blank texts stay blank, without a model call
        if not todo:
            return out
        if tgt_code and tgt_code.startswith('>>'):  # multi-target Marian: the target is a prefix token
            texts = [f'{tgt_code} {t}' for t in texts]
        forced = {'forced_bos_token_id': tokenizer.convert_tokens_to_ids(tgt_code)} if (
            tgt_code and not tgt_code.startswith('>>')) else {}
        lengths = {i: len(ids) for i, ids in zip(todo, tokenizer([texts[i] for i in todo])['input_ids'])}
        self.truncated += sum(n > self.max_length for n in lengths.values())
        if self.sort_by_length:
            todo.sort(key=lengths.__getitem__)
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                inputs = tokenizer([texts[i] for i in batch], return_tensors='pt', padding=True, truncation=True,
                                   max_length=self.max_length).to(self.device)
                budgets = [self._output_budget(lengths[i]) for i in batch]
                generated = model.generate(**inputs, **forced, num_beams=self.num_beams, do_sample=False,
                                           max_new_tokens=max(budgets), forced_eos_token_id=None)
                self.generate_calls += 1
                self.decoder_steps += generated.shape[1] - 1
                self.input_tokens += inputs['input_ids'].numel()
                # each text's own budget (and no EOS forced at the cap), so its translation does not depend on
                # the batch it landed in
                sequences = [seq[:1 + budget] for seq, budget in zip(generated.tolist(), budgets)]
                for i, text in zip(batch, tokenizer.batch_decode(sequences, skip_special_tokens=True)):
                    out[i] = text.strip()
        return out

    def _output_budget(self, input_tokens: int) -> int:
        """Output tokens allowed for an input: twice its length plus 8, at most ``max_length``."""
        return min(self.max_length, 2 * min(input_tokens, self.max_length) + 8)

    def __repr__(self) -> str:
        return f'Seq2SeqTranslator({self.name!r}, batch_size={self.batch_size})'


class LexiconTranslator:
    """Word-by-word 'translation' with MUSE lexicons: every known word replaced, word order kept.

    A cheap offline option, labelled as such in its name and in the manifest; it is code-switching with p = 1
    (:class:`~pyterrier_hybrid.CodeSwitcher`), so a word with several translations gets one of them, seeded.
    """

    def __init__(self, lexicons: Iterable[Lexicon], seed: int = 0):
        self.switchers = {(lex.src, lex.tgt): CodeSwitcher(lex, p=1.0, seed=seed) for lex in lexicons}
        pairs = ','.join(f'{s}-{t}' for s, t in self.switchers)
        self.name = f'lexicon-word-by-word[{pairs}]'

    def __call__(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        switcher = self.switchers.get((src, tgt))
        if switcher is None:
            raise UnsupportedLanguageError(f'no {src}-{tgt} lexicon; lexicons: '
                                           f'{", ".join(f"{s}-{t}" for s, t in self.switchers)}')
        return [switcher(text) for text in texts]

    def __repr__(self) -> str:
        return f'LexiconTranslator({self.name!r})'


class TranslationCache:
    """Translations in SQLite, keyed by (model, source language, target language, text hash).

    Every :meth:`put` commits, so what was translated before a crash is kept; shard processes may share one file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute('CREATE TABLE IF NOT EXISTS translation (model TEXT, src TEXT, tgt TEXT, key TEXT, '
                             'text TEXT, PRIMARY KEY (model, src, tgt, key))')
        except sqlite3.DatabaseError as error:
            raise ValueError(f'{self.path} is not a translation cache ({error}); delete it or pass another') from error

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, model: str, src: str, tgt: str, texts: Iterable[str]) -> dict[str, str]:
        """The cached translations of ``texts`` (text -> translation)."""
        by_key = {self._key(t): t for t in texts}
        found = {}
        keys = list(by_key)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._db.execute(f'SELECT key, text FROM translation WHERE model=? AND src=? AND tgt=? AND key IN '
                                    f'({",".join("?" * len(chunk))})', (model, src, tgt, *chunk))
            found.update((by_key[key], text) for key, text in rows)
        return found

    def put(self, model: str, src: str, tgt: str, translations: dict[str, str]) -> None:
        with self._db:
            self._db.executemany('INSERT OR REPLACE INTO translation VALUES (?, ?, ?, ?, ?)',
                                 [(model, src, tgt, self._key(s), t) for s, t in translations.items()])

    def __len__(self) -> int:
        return self._db.execute('SELECT COUNT(*) FROM translation').fetchone()[0]


def english_items(source: str | os.PathLike, *, lang: str = 'en', limit: int | None = None,
                  fields: dict[str, str] | None = None, split: str = 'train') -> list[ParallelItem]:
    """QA pairs in language ``lang`` from one source.

    Args:
        source: a JSONL file in the package's format (its ``lang`` items); ``hf:<name or path>`` for a Hugging
            Face ``datasets`` dataset (a Hub name, a ``save_to_disk`` folder or a JSON/CSV/Parquet file); or an
            ir_datasets id with docpairs (query, positive, negative) or queries + qrels (first relevant document).
        limit: the first ``limit`` items.
        fields: Hugging Face column names, ``{'id': ..., 'query': ..., 'positive': ..., 'negatives': ...}``;
            by default the first present of id/_id/query_id, query/question, positive/passage/context/answer,
            negatives/negative.
        split: the Hugging Face split.
    """
    source = str(source)
    if source.startswith('hf:'):
        items = _hf_items(source[3:], lang, fields or {}, split, limit)
    elif Path(source).is_file():
        items = [i for i in read_items(source) if i.lang == lang][:limit]
    else:
        items = _irds_english_items(source, lang, limit)
    if not items:
        raise ValueError(f'{source} holds no {lang!r} QA pairs')
    return items


def _irds_english_items(dataset_id: str, lang: str, limit: int | None) -> list[ParallelItem]:
    import ir_datasets
    dataset = ir_datasets.load(dataset_id)
    if dataset.has_docpairs():
        return irds_items({lang: dataset_id}, limit=limit)
    if not (dataset.has_queries() and dataset.has_qrels() and dataset.has_docs()):
        raise ValueError(f'{dataset_id} has neither docpairs nor queries, qrels and docs to take QA pairs from')
    relevant = {}
    for qrel in dataset.qrels_iter():
        if qrel.relevance > 0:
            relevant.setdefault(qrel.query_id, qrel.doc_id)
    store = dataset.docs_store()
    items = []
    for query in dataset.queries_iter():
        if query.query_id in relevant:
            items.append(ParallelItem(query.query_id, lang, query.default_text(),
                                      store.get(relevant[query.query_id]).default_text()))
            if limit is not None and len(items) >= limit:
                break
    return items


def _hf_items(name: str, lang: str, fields: dict[str, str], split: str, limit: int | None) -> list[ParallelItem]:
    import datasets
    path = Path(name)
    if path.is_dir():
        data = datasets.load_from_disk(name)
    elif path.is_file():
        builder = {'.jsonl': 'json', '.json': 'json', '.csv': 'csv', '.parquet': 'parquet'}.get(path.suffix)
        if builder is None:
            raise ValueError(f'cannot read {name} as a Hugging Face dataset (use .jsonl, .json, .csv or .parquet)')
        data = datasets.load_dataset(builder, data_files=name, split='train')
    else:
        data = datasets.load_dataset(name, split=split)
    if isinstance(data, datasets.DatasetDict):
        data = data[split]
    columns = set(data.column_names)
    defaults = {'id': ('id', '_id', 'query_id'), 'query': ('query', 'question'),
                'positive': ('positive', 'passage', 'context', 'answer'), 'negatives': ('negatives', 'negative')}
    chosen = {role: fields.get(role) or next((c for c in names if c in columns), None)
              for role, names in defaults.items()}
    for role in ('query', 'positive'):
        if chosen[role] not in columns:
            raise ValueError(f'{name} has no {role} column (columns: {", ".join(sorted(columns))}); '
                             f'pass fields={{"{role}": ...}}')
    items = []
    for number, row in enumerate(data.select(range(min(limit, len(data)))) if limit else data):
        negatives = row.get(chosen['negatives']) if chosen['negatives'] else ()
        negatives = (negatives,) if isinstance(negatives, str) else tuple(negatives or ())
        item_id = str(row[chosen['id']]) if chosen['id'] else str(number)
        items.append(ParallelItem(item_id, lang, row[chosen['query']], row[chosen['positive']], negatives))
    return items


def translate_items(items: Sequence[ParallelItem], translator: Translator, langs: Sequence[str], *,
                    source_lang: str = 'en', cache: TranslationCache | None = None, chunk_items: int = 256,
                    stats: Counter | None = None, progress: bool = True) -> Iterator[ParallelItem]:
    """Each item followed by its translations into ``langs`` (item-major order, ids kept).

    Items are translated ``chunk_items`` at a time; each chunk's new translations go to the cache before the
    chunk's items are yielded. ``stats`` counts texts ``translated`` by the model and found ``cached``.
    """
    from tqdm.auto import tqdm
    stats = Counter() if stats is None else stats
    targets = [lang for lang in langs if lang != source_lang]
    with tqdm(total=len(items) * len(targets), unit='item', desc='translating', disable=not progress) as bar:
        for start in range(0, len(items), chunk_items):
            chunk = items[start:start + chunk_items]
            texts = list(dict.fromkeys(t for item in chunk for t in (item.query, item.positive, *item.negatives)))
            translated = {lang: _translate(texts, translator, source_lang, lang, cache, stats) for lang in targets}
            for item in chunk:
                yield item
                for lang in targets:
                    table = translated[lang]
                    yield ParallelItem(item.id, lang, table[item.query], table[item.positive],
                                       tuple(table[n] for n in item.negatives))
            bar.update(len(chunk) * len(targets))


def _translate(texts: list[str], translator: Translator, src: str, tgt: str, cache: TranslationCache | None,
               stats: Counter) -> dict[str, str]:
    found = cache.get(translator.name, src, tgt, texts) if cache is not None else {}
    missing = [t for t in texts if t not in found]
    if missing:
        new = dict(zip(missing, translator(missing, src, tgt)))
        if cache is not None:
            cache.put(translator.name, src, tgt, new)
        found.update(new)
    stats['translated'] += len(missing)
    stats['cached'] += len(texts) - len(missing)
    return found


def manifest_path(output: str | os.PathLike) -> Path:
    """``train.jsonl`` -> ``train.manifest.json``."""
    output = Path(output)
    return output.with_name(output.name.removesuffix('.jsonl') + '.manifest.json')


def translate_train(source: str | os.PathLike, output: str | os.PathLike, translator: Translator,
                    langs: Sequence[str], *, source_lang: str = 'en', cache: str | os.PathLike | None = None,
                    shard: tuple[int, int] | None = None, limit: int | None = None,
                    fields: dict[str, str] | None = None, chunk_items: int = 256, progress: bool = True) -> Path:
    """Translate the English QA pairs of ``source`` into ``langs`` and write the parallel training set.

    Writes ``output`` (JSONL, each item followed by its translations) and its manifest (source, model,
    languages, counts, time) atomically. ``cache`` defaults to ``<output>.cache.sqlite``. With ``shard=(i, N)``
    only items i, i+N, ... are translated; :func:`merge_translations` joins the N outputs. Translations reach
    the cache every ``chunk_items`` items, which bounds the work a crash can lose.
    """
    output = Path(output)
    unknown = [lang for lang in langs if not re.fullmatch(r'[a-z]{2,3}(_[A-Za-z]{4})?', lang)]
    if unknown:
        raise ValueError(f'language codes look like de or zh, not {unknown}')
    for lang in dict.fromkeys(langs):
        if lang != source_lang:
            translator([], source_lang, lang)  # fail before any work on an unsupported language
    started = time.perf_counter()
    items = english_items(source, lang=source_lang, limit=limit, fields=fields)
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f'shard must be in 0..{count - 1}, not {index}')
        items = items[index::count]
    stats = Counter()
    translation_cache = TranslationCache(cache or output.with_name(output.name + '.cache.sqlite'))
    translated = list(translate_items(items, translator, langs, source_lang=source_lang, cache=translation_cache,
                                      chunk_items=chunk_items, stats=stats, progress=progress))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_items(translated, output)
    manifest = {
        'source': str(source), 'translator': translator.name, 'kind': _kind(translator), 'source_lang': source_lang,
        'langs': list(langs), 'shard': list(shard) if shard else None, 'items': len(items),
        'counts': dict(Counter(i.lang for i in translated)), 'texts_translated': stats['translated'],
        'texts_cached': stats['cached'], 'truncated': getattr(translator, 'truncated', 0),
        'seconds': round(time.perf_counter() - started, 2), 'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    }
    _write_manifest(manifest, output)
    return output


def _write_manifest(manifest: dict, output: Path) -> None:
    write_atomically(manifest_path(output), lambda tmp: tmp.write_text(json.dumps(manifest, indent=1,
                                                                                   ensure_ascii=False)))


def _kind(translator: Translator) -> str:
    if isinstance(translator, LexiconTranslator):
        return 'lexicon word-by-word substitution (offline stand-in, not machine translation)'
    return 'machine translation'


def merge_translations(shards: Sequence[str | os.PathLike], output: str | os.PathLike) -> Path:
    """Join the outputs of ``shard=(0, N)`` .. ``(N-1, N)`` into what one run would have written.

    Raises:
        ValueError: when a shard's manifest is missing, the shards do not cover 0..N-1 exactly once, or they
            come from different sources, translators or languages.
    """
    manifests = []
    for path in shards:
        mpath = manifest_path(path)
        if not mpath.is_file():
            raise ValueError(f'{path} has no manifest {mpath}; is it the output of translate_train(shard=...)?')
        manifests.append(json.loads(mpath.read_text()))
    if any(m['shard'] is None for m in manifests):
        raise ValueError('merge shard outputs only, not a whole run')
    count = manifests[0]['shard'][1]
    order = sorted(range(len(shards)), key=lambda k: manifests[k]['shard'][0])
    if sorted(m['shard'][0] for m in manifests) != list(range(count)) or any(m['shard'][1] != count
                                                                             for m in manifests):
        raise ValueError(f'shards {[m["shard"] for m in manifests]} do not cover 0..{count - 1} of {count} once')
    for key in ('source', 'translator', 'langs', 'source_lang'):
        if len({json.dumps(m[key]) for m in manifests}) > 1:
            raise ValueError(f'the shards differ in {key}: {[m[key] for m in manifests]}')
    groups = [[list(g) for _, g in itertools.groupby(read_items(shards[k]), key=lambda i: i.id)] for k in order]
    merged = [item for row in itertools.zip_longest(*groups) for group in row if group for item in group]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_items(merged, output)
    first = manifests[order[0]]
    manifest = {**first, 'shard': None, 'merged_from': [str(shards[k]) for k in order],
                'items': sum(m['items'] for m in manifests),
                'counts': dict(sum((Counter(m['counts']) for m in manifests), Counter())),
                **{key: sum(m[key] for m in manifests) for key in ('texts_translated', 'texts_cached', 'truncated',
                                                                   'seconds')}}
    _write_manifest(manifest, output)
    return output
