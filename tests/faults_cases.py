"""The bad inputs of tests/test_faults.py, one row each: what is done, the exception (or exit code 2) expected and a
regex its message must match, naming the offending value or field (and, where there are some, the valid choices).

API cases are functions of a :class:`Ctx` (the tiny model, its encoder, a small shared index, a scratch folder);
CLI cases are argument lists, where ``{model}``, ``{index}``, ``{corrupt}``, ``{tmp}`` and ``{other_run}`` are
filled in; YAML cases are experiment files (``{model}`` filled in) for load_experiment and the run command.
"""
from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyterrier as pt

import pyterrier_hybrid as ph
from pyterrier_hybrid.evaluation.measures import parse_measure

DATASET = 'lareqa/xquad-r/th/th'
DOCS = [{'docno': f'd{i}', 'text': text} for i, text in enumerate([
    'The Panthers defense gave up just 308 points.', 'Die Verteidigung gab nur 308 Punkte ab.',
    'Kurt Coleman led the team with seven interceptions.', 'La defensa permitió solo 308 puntos.',
    'Who led the team in interceptions?', 'How many points did the Panthers defense surrender?',
    'Wie viele Punkte gab die Verteidigung der Panthers ab?', '¿Cuántos puntos permitió la defensa?', 'a b c d'])]


@dataclass
class Ctx:
    """What an API case may use; ``tmp`` is the case's own folder."""
    model: Path
    encoder: Any
    index: Path
    tmp: Path

    def damaged(self, damage: Callable[[Path], object]) -> Any:
        """A copy of the shared index with ``damage(copy_path)`` done to it."""
        path = self.tmp / 'damaged'
        shutil.copytree(self.index, path)
        damage(path)
        return ph.DenseIndex(path)

    def model_copy(self, damage: Callable[[Path], object]) -> Path:
        path = self.tmp / 'model'
        shutil.copytree(self.model, path)
        damage(path)
        return path

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode('utf-8'))
        return path


class Case(NamedTuple):
    name: str
    run: Callable[[Ctx], object]
    error: type
    pattern: str


def _queries(**columns) -> pd.DataFrame:
    return pd.DataFrame({'qid': [f'q{i + 1}' for i in range(len(next(iter(columns.values()))))], **columns},
                        dtype=object)  # object: pandas' arrow strings refuse lone surrogates themselves


def _encode_queries(*texts):
    return lambda c: c.encoder.query_encoder()(_queries(query=list(texts)))


def _encode_docs(frame: dict):
    return lambda c: c.encoder.doc_encoder()(pd.DataFrame(frame, dtype=object))


def _search(**kwargs):
    return lambda c: ph.DenseIndex(c.index).retriever(**kwargs)


def _vectors(n: int, dim: int = 32, bad: int | None = None) -> list[dict]:
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    if bad is not None:
        vectors[bad, 0] = np.nan
    return [{'docno': f'v{i}', 'doc_vec': v} for i, v in enumerate(vectors)]


def _build(path_name: str, docs: list[dict]):
    return lambda c: ph.DenseIndex(c.tmp / path_name).indexer().index(docs)


def _rewrite(name: str, data: bytes | Callable[[bytes], bytes]):
    def damage(path: Path) -> None:
        target = path / name
        target.write_bytes(data(target.read_bytes()) if callable(data) else data)
    return damage


def _nan_vector(path: Path) -> None:
    vectors = np.memmap(path / 'vecs.f4', dtype=np.float32, mode='r+').reshape(len(DOCS), -1)
    vectors[3, 5] = np.nan
    vectors.flush()


def _open(damage):
    return lambda c: c.damaged(damage).retriever()


def _search_damaged(damage):
    return lambda c: c.damaged(damage).retriever()(_queries(query=['x'], query_vec=[np.ones(32, np.float32)]))


def _load_model(damage):
    return lambda c: ph.HybridEncoder.from_pretrained(c.model_copy(damage))


def _other_model(c: Ctx):
    other = copy.copy(c.encoder)
    other.model_name = 'someone/else'
    return other >> ph.DenseIndex(c.index).retriever()


def _merge(*names: str, damage=None):
    def run(c: Ctx):
        paths = []
        for name in names:
            if name == 'shared':
                paths.append(c.index)
            elif name == 'corrupt':
                paths.append(c.damaged(damage).index_path)
            elif name.startswith('dim'):
                paths.append(ph.DenseIndex(c.tmp / name).indexer().index(_vectors(4, int(name[3:]))).index_path)
            else:
                paths.append(c.tmp / name)
        return ph.DenseIndex.merge(paths, c.tmp / 'merged')
    return run


def _items(*lines: str, raw: bytes | None = None):
    return lambda c: ph.read_items(c.write('items.jsonl', raw if raw is not None else '\n'.join(lines) + '\n'))


ITEM = {'id': 'q1', 'lang': 'de', 'query': 'Wer?', 'positive': 'Er.'}


def _item(**changes) -> str:
    return json.dumps({**ITEM, **changes}, ensure_ascii=False)


def _lexicon(name: str, data: bytes):
    return lambda c: ph.load_lexicon(c.write(name, data))


def _means() -> ph.LanguageMeans:
    rng = np.random.default_rng(0)
    return ph.LanguageMeans.fit([(rng.normal(size=4), lang) for lang in ('de', 'en') for _ in range(3)])


def _debias(frame: dict, method: str = 'centre'):
    return lambda c: ph.LanguageBiasRemoval(_means(), method)(pd.DataFrame(frame))


def _fast_path(measure: str):
    def run(c: Ctx):
        from pyterrier_hybrid.evaluation import fast
        fast._refuse_unsupported([parse_measure(measure)])
    return run


def _recipe(**values):
    return lambda c: ph.Recipe.from_mapping(values)


IVE = pt.validate.InputValidationError

API_CASES = [
    # encoder: texts that would encode to something meaningless, and checkpoints that do not load
    Case('query-lone-surrogate', _encode_queries('fine', 'a\ud800b'), ValueError,
         r"1 'query' value\(s\) with a lone surrogate, not valid Unicode \(qid: q2\)"),
    Case('query-non-string', lambda c: c.encoder.query_encoder()(_queries(query=['fine', 5])), TypeError,
         r"1 non-string 'query' value\(s\) \(found int\) \(qid: q2\)"),
    Case('query-whitespace', _encode_queries(' \t\n'), ValueError, r"1 empty 'query' value\(s\) \(qid: q1\)"),
    Case('query-zero-width-only', _encode_queries('\u200b\u2060\ufeff'), ValueError, r"1 empty 'query' value"),
    Case('query-none', _encode_queries(None), ValueError, r"1 empty 'query' value"),
    Case('query-column-missing', lambda c: c.encoder.query_encoder()(_queries(text=['x'])), IVE,
         r"missing_columns=\['query'\]"),
    Case('doc-lone-surrogate', _encode_docs({'docno': ['d1'], 'text': ['\udc80 x']}), ValueError,
         r"1 'text' value\(s\) with a lone surrogate.*\(docno: d1\)"),
    Case('doc-non-string-text', _encode_docs({'docno': ['d1'], 'text': [3.5]}), TypeError,
         r"1 non-string 'text' value\(s\) \(found float\) \(docno: d1\)"),
    Case('doc-non-string-docno', _encode_docs({'docno': ['d0', 7], 'text': ['x', 'y']}), TypeError,
         r"1 non-string docno value\(s\) \(row 1: 7 \(int\)\); docnos must be strings"),
    Case('doc-without-docno', _encode_docs({'text': ['x']}), IVE, r"missing_columns=\['docno'\]"),
    Case('checkpoint-corrupt-sentence-bert-config', _load_model(_rewrite('sentence_bert_config.json', b'{"max_seq')),
         OSError, r"sentence_bert_config\.json is not valid JSON .*the checkpoint .* is corrupt"),
    Case('checkpoint-corrupt-config', _load_model(_rewrite('config.json', b'\xff\xfe')), OSError,
         r"config\.json is not valid JSON"),
    Case('checkpoint-corrupt-modules', _load_model(_rewrite('modules.json', b'[{"idx": 0,')), OSError,
         r"modules\.json is not valid JSON"),
    Case('checkpoint-truncated-weights', _load_model(_rewrite('model.safetensors', lambda b: b[:1000])), OSError,
         r"model\.safetensors .*corrupt"),
    Case('checkpoint-missing', lambda c: ph.HybridEncoder.from_pretrained(c.tmp / 'no-model'), OSError,
         r"cannot load the checkpoint '.*no-model'"),
    Case('quantize-off-cpu', lambda c: ph.HybridEncoder.from_pretrained(c.model, device='cuda', quantize=True),
         ValueError, r'quantize=True is the int8 CPU path; use device="cpu"'),
    # index: missing, corrupt, searched wrongly, built wrongly
    Case('index-missing', lambda c: ph.DenseIndex(c.tmp / 'none').retriever(), FileNotFoundError,
         r"no index at .*none; build it first"),
    Case('index-truncated-vectors', _open(_rewrite('vecs.f4', b'\0' * 12)), ph.CorruptIndexError,
         r"vecs\.f4 is truncated or corrupt: 9 vectors of 32 floats need 1152 bytes, found 12 bytes"),
    Case('index-nan-vector', _search_damaged(_nan_vector), ph.CorruptIndexError,
         r"vecs\.f4 holds NaN or infinite values \(first in vector 3\)"),
    Case('index-meta-not-json', _open(_rewrite('pt_meta.json', b'{"type": ')), ph.CorruptIndexError,
         r"pt_meta\.json is not valid JSON"),
    Case('index-meta-missing', _open(lambda p: (p / 'pt_meta.json').unlink()), ph.CorruptIndexError,
         r"is not a built index: pt_meta\.json is missing"),
    Case('index-meta-foreign', _open(_rewrite('pt_meta.json', b'{"type": "sparse_index", "format": "terrier"}')),
         ph.CorruptIndexError, r"pt_meta\.json does not describe a flex dense index \(missing: \['vec_size'"),
    Case('index-docnos-damaged', _open(_rewrite('docnos.npids', b'garbage')), ph.CorruptIndexError,
         r"docnos\.npids cannot be read"),
    Case('num-results-zero', _search(num_results=0), ValueError,
         r"num_results must be a positive integer \(or None: rank every document\), not 0"),
    Case('num-results-negative', _search(num_results=-5), ValueError, r"num_results must be a positive .*not -5"),
    Case('num-results-float', _search(num_results=2.5), ValueError, r"num_results must be a positive .*not 2\.5"),
    Case('num-results-string', _search(num_results='10'), ValueError, r"num_results must be a positive .*not '10'"),
    Case('num-results-bool', _search(num_results=True), ValueError, r"num_results must be a positive .*not True"),
    Case('search-method-unknown', _search(method='exact'), ValueError,
         r"unknown method 'exact'; valid: flat, hnsw, ivfpq"),
    Case('search-parameter-unknown', _search(method='hnsw', efsearch=5), TypeError,
         r"unknown parameter\(s\) efsearch for method 'hnsw'; valid: neighbours, ef_construction, ef_search"),
    Case('search-subset-unknown-docno', _search(docnos=['d1', 'nope']), KeyError, r"1 docno\(s\) not in .*: nope"),
    Case('search-with-another-model', _other_model, ph.IncompatibleEncoderError,
         r"built by '.*', not by the query encoder 'someone/else'; pass allow_other_encoder=True"),
    Case('search-query-vectors-of-another-dimension',
         lambda c: ph.DenseIndex(c.index).retriever()(_queries(query=['x'], query_vec=[np.ones(8, np.float32)])),
         ph.IncompatibleEncoderError, r"query vectors have 8 dimensions but .* holds 32-dimensional ones"),
    Case('build-over-existing', lambda c: ph.DenseIndex(c.index).indexer().index(_vectors(2)), FileExistsError,
         r'already exists; use index\.indexer\(mode="overwrite"\) \(CLI: --overwrite\)'),
    Case('build-mode-unknown', lambda c: ph.DenseIndex(c.tmp / 'i').indexer(mode='append'), ValueError,
         r"mode must be 'create' or 'overwrite', not 'append'"),
    Case('build-empty-corpus', _build('i', []), ValueError, r"no documents to index into .*i"),
    Case('build-duplicate-docno', _build('i', _vectors(3) + _vectors(1)), ValueError,
         r"duplicate docno 'v0' in the corpus; docnos must be unique"),
    Case('build-nan-vector', _build('i', _vectors(3, bad=1)), ValueError,
         r"the vector of 'v1' holds NaN or infinite values; check the encoder"),
    Case('merge-no-shards', _merge(), ValueError, r"no shards to merge"),
    Case('merge-missing-shard', _merge('shared', 'none'), FileNotFoundError, r"no index at .*none"),
    Case('merge-corrupt-shard', _merge('shared', 'corrupt', damage=_rewrite('vecs.f4', b'\0' * 4)),
         ph.CorruptIndexError, r"vecs\.f4 is truncated or corrupt"),
    Case('merge-shards-of-two-encoders', _merge('dim32', 'dim16'), ph.IncompatibleEncoderError,
         r"dim16 was built by another encoder than .*dim32; shards must share one encoder"),
    Case('shard-out-of-range', lambda c: ph.shard_corpus([], 2, 2), ValueError, r"shard must be in 0\.\.1, not 2"),
    Case('shard-negative', lambda c: ph.shard_corpus([], -1, 4), ValueError, r"shard must be in 0\.\.3, not -1"),
    # training items (JSONL): every bad line named by file:line
    Case('jsonl-negatives-string', _items(_item(negatives='one negative')), ValueError,
         r"items\.jsonl:1: not a training item \(negatives is \"one negative\", not a list of strings\)"),
    Case('jsonl-null-id', _items(_item(), _item(id=None)), ValueError, r"items\.jsonl:2: .*\(id is null\)"),
    Case('jsonl-bool-id', _items(_item(id=True)), ValueError, r"items\.jsonl:1: .*\(id is true\)"),
    Case('jsonl-duplicate-id-lang', _items(_item(), _item(query='Wer noch?')), ValueError,
         r"items\.jsonl:2: item 'q1' in language 'de' is already on line 1; each \(id, lang\) may appear once"),
    Case('jsonl-numeric-query', _items(_item(query=5)), ValueError,
         r"items\.jsonl:1: .*\(query is 5, not a string\)"),
    Case('jsonl-numeric-lang', _items(_item(lang=7)), ValueError, r"items\.jsonl:1: .*\(lang is 7, not a string\)"),
    Case('jsonl-empty-lang', _items(_item(lang='')), ValueError, r"items\.jsonl:1: .*\(lang is empty\)"),
    Case('jsonl-missing-key', _items(json.dumps({'id': 'q1', 'lang': 'de', 'query': 'Wer?'})), ValueError,
         r"items\.jsonl:1: not a training item \(missing key 'positive'\)"),
    Case('jsonl-not-an-object', _items(_item(), '["q1", "de"]'), ValueError,
         r"items\.jsonl:2: not a training item \(a list, not an object\)"),
    Case('jsonl-broken-json', _items(_item(), '{"id": "q2",'), ValueError, r"items\.jsonl:2: not a training item"),
    Case('jsonl-invalid-utf8', _items(raw=_item().encode() + b'\n{"id": "q2\xff"}\n'), ValueError,
         r"items\.jsonl:2: not UTF-8"),
    Case('jsonl-missing-file', lambda c: ph.read_items(c.tmp / 'none.jsonl'), FileNotFoundError, r"none\.jsonl"),
    # lexicons
    Case('lexicon-invalid-utf8', _lexicon('en-de.txt', b'house haus\ncat k\xe4tzchen\n'), ValueError,
         r"en-de\.txt:2: not UTF-8 \(invalid .* at byte 16\); MUSE lexicons are UTF-8 text"),
    Case('lexicon-malformed-line', _lexicon('en-de.txt', b'house haus\ncat\n'), ValueError,
         r"en-de\.txt:2: expected \"source target\".*got 'cat'"),
    Case('lexicon-pair-unknown', _lexicon('words.txt', b'house haus\n'), ValueError,
         r"cannot tell the language pair of .*words\.txt from its name; pass src= and tgt="),
    # data sets and settings
    Case('lareqa-unknown-language', lambda c: ph.lareqa_settings('xquad-r', langs=['de', 'xx']), KeyError,
         r"unknown 'xx' for lareqa/xquad-r; valid: ar, de, el, en"),
    Case('lareqa-unknown-collection', lambda c: ph.lareqa_settings('xquad'), KeyError,
         r"unknown 'xquad' for LAReQA collections; valid: xquad-r, mlqa-r"),
    Case('setting-kind-unknown', lambda c: ph.lareqa_settings('xquad-r', kinds=['Mono']), KeyError,
         r"unknown 'Mono' for setting kinds; valid: Mo, Cr, Mul"),
    Case('translate-language-code', lambda c: ph.translate_train('x.jsonl', c.tmp / 'o.jsonl', None, ['German']),
         ValueError, r"language codes look like de or zh, not \['German'\]"),
    Case('translate-no-lexicon-for-pair',
         lambda c: ph.LexiconTranslator([ph.Lexicon('en', 'de', {'a': ('b',)})])(['a'], 'en', 'fr'),
         ph.UnsupportedLanguageError, r"no en-fr lexicon"),
    Case('merge-translations-not-shards', lambda c: ph.merge_translations([c.write('t.jsonl', '')], c.tmp / 'o'),
         ValueError, r"t\.jsonl has no manifest .*t\.manifest\.json"),
    Case('translation-cache-not-sqlite', lambda c: ph.TranslationCache(c.write('c.sqlite', b'not a database' * 9)),
         ValueError, r"c\.sqlite is not a translation cache"),
    # measures
    Case('measure-rank-distance-cutoff-text', lambda c: parse_measure('RankDistance@x'),
         ValueError, r"unknown measure 'RankDistance@x'.*e\.g\. AP, .*RankDistance@100"),
    Case('measure-rank-distance-cutoff-zero', lambda c: parse_measure('RankDistance@0'),
         ValueError, r"unknown measure 'RankDistance@0' \(a cutoff is a positive integer\)"),
    Case('measure-rank-distance-cutoff-float',
         lambda c: parse_measure('RankDistance(cutoff=5.5)'), ValueError,
         r"unknown measure 'RankDistance\(cutoff=5\.5\)' \(invalid param cutoff=5\.5\)"),
    Case('measure-ndcg-cutoff-text', lambda c: parse_measure('nDCG@ten'), ValueError,
         r"unknown measure 'nDCG@ten'"),
    Case('measure-not-a-name', lambda c: parse_measure(5), ValueError,
         r"expected a measure name, got 5"),
    Case('measure-unknown-name', lambda c: parse_measure('Bogus@10'), ValueError,
         r"unknown measure 'Bogus@10'"),
    Case('measure-fast-path-refuses-rr-at-k', _fast_path('RR@10'), ValueError,
         r"the fast path cannot compute RR@10 exactly"),
    # language bias removal
    Case('bias-no-lang-column', _debias({'docno': ['d1'], 'doc_vec': [np.ones(4)]}), ph.MissingLanguageError,
         r"LanguageBiasRemoval\(method='centre'\) needs each text's language in column 'lang'.*method='project'"),
    Case('bias-unknown-language', _debias({'docno': ['d1'], 'doc_vec': [np.ones(4)], 'lang': ['xx']}),
         ph.UnknownLanguageError, r"no document mean for language\(s\) 'xx'; the means know: de, en"),
    Case('bias-empty-language', _debias({'docno': ['d1'], 'doc_vec': [np.ones(4)], 'lang': ['']}), ValueError,
         r"1 text\(s\) without a language in 'lang'"),
    Case('bias-other-dimension', _debias({'docno': ['d1'], 'doc_vec': [np.ones(6)], 'lang': ['de']}), ValueError,
         r"vectors of shape \(1, 6\) do not match the 4-dimensional language means"),
    Case('bias-method-unknown', lambda c: ph.LanguageBiasRemoval(_means(), 'center'), ValueError,
         r"unknown method 'center'; valid: centre, project, centre\+project"),
    Case('bias-k-out-of-range', lambda c: ph.LanguageBiasRemoval(_means(), 'project', k=3), ValueError,
         r"k must be in 1\.\.1 .*not 3"),
    Case('bias-means-missing', lambda c: ph.LanguageMeans.load(c.tmp), FileNotFoundError,
         r"language_means\.json is missing; write it with LanguageMeans\.save"),
    # the training recipe (the Python side of YAML's train: and the train command's options)
    Case('recipe-steps-text', _recipe(steps='forty'), ph.RecipeError, r"^steps: expected an integer, not 'forty'"),
    Case('recipe-steps-zero', _recipe(steps=0), ph.RecipeError, r"^steps: must be a positive number, not 0"),
    Case('recipe-alpha', _recipe(alpha=1.5), ph.RecipeError, r"^alpha: must lie in \[0, 1\]"),
    Case('recipe-key-unknown', _recipe(stepz=3), ph.RecipeError, r"^stepz: unknown key 'stepz'; valid: strategy"),
]


class CliCase(NamedTuple):
    name: str
    args: tuple[str, ...]
    pattern: str  # the error line's message


CLI_CASES = [
    CliCase('evaluate-unknown-dataset', ('evaluate', 'no-such/dataset', '{tmp}/run.res'),
            r"evaluate: error: unknown data set id 'no-such/dataset': ir_datasets has no such id"),
    CliCase('index-unknown-dataset', ('index', '{model}', 'no-such/dataset', '{tmp}/i'),
            r"index: error: unknown data set id 'no-such/dataset'"),
    CliCase('retrieve-unknown-dataset', ('retrieve', '{model}', '{index}', 'no-such/dataset', '--output', '{tmp}/r'),
            r"retrieve: error: unknown data set id 'no-such/dataset'"),
    CliCase('index-unknown-language', ('index', '{model}', 'lareqa/xquad-r/xx', '{tmp}/i'),
            r"index: error: unknown language 'xx' for lareqa/xquad-r; valid: ar, de"),
    CliCase('evaluate-run-of-another-dataset', ('evaluate', DATASET, '{other_run}', '--measures', 'AP'),
            r"none of its 3 queries has qrels in lareqa/xquad-r/th/th \(1190 judged queries\); is it a run of "
            r"another data set\?"),
    CliCase('evaluate-run-not-trec', ('evaluate', DATASET, '{tmp}/garbage.res'),
            r"evaluate: error: .*garbage\.res:1: not a TREC run line"),
    CliCase('evaluate-run-missing', ('evaluate', DATASET, '{tmp}/none.res'),
            r"evaluate: error: .*No such file or directory: '.*none\.res'"),
    CliCase('evaluate-measure', ('evaluate', DATASET, '{other_run}', '--measures', 'AP', 'RankDistance@x'),
            r"evaluate: error: unknown measure 'RankDistance@x'.*RankDistance@100"),
    CliCase('shard-not-a-fraction', ('index', '{model}', DATASET, '{tmp}/i', '--shard', 'half'),
            r"argument --shard: expected SHARD/NUM_SHARDS such as 0/4, not 'half'"),
    CliCase('shard-out-of-range', ('index', '{model}', DATASET, '{tmp}/i', '--shard', '2/2'),
            r"argument --shard: shard 2 is not in 0\.\.1"),
    CliCase('shard-of-zero', ('index', '{model}', DATASET, '{tmp}/i', '--shard', '0/0'),
            r"argument --shard: shard 0 is not in 0\.\.-1"),
    CliCase('shard-negative', ('index', '{model}', DATASET, '{tmp}/i', '--shard=-1/2'),
            r"argument --shard: shard -1 is not in 0\.\.1"),
    CliCase('num-results-zero', ('retrieve', '{model}', '{index}', DATASET, '--output', '{tmp}/r', '--num-results',
                                 '0'), r"argument --num-results: expected a positive integer, not '0'"),
    CliCase('num-results-negative', ('retrieve', '{model}', '{index}', DATASET, '--output', '{tmp}/r',
                                     '--num-results=-5'), r"--num-results: expected a positive integer, not '-5'"),
    CliCase('run-experiment-missing', ('run', '{tmp}/none.yaml'), r"run: error: .*No such file .*none\.yaml"),
    CliCase('translate-neither-model-nor-lexicon', ('translate', 'x.jsonl', '{tmp}/o.jsonl', '--langs', 'de'),
            r"translate: error: give either --model \(machine translation\) or --lexicon"),
    CliCase('merge-translations-not-shards', ('merge-translations', '{tmp}/none.jsonl', '--output', '{tmp}/o.jsonl'),
            r"merge-translations: error: .*none\.jsonl has no manifest"),
    # these load the index and (some) the model: torch
    CliCase('retrieve-missing-index', ('retrieve', '{model}', '{tmp}/none', DATASET, '--output', '{tmp}/r'),
            r"retrieve: error: no index at .*none; build it first"),
    CliCase('retrieve-corrupt-index', ('retrieve', '{model}', '{corrupt}', DATASET, '--output', '{tmp}/r'),
            r"retrieve: error: .*vecs\.f4 is truncated or corrupt"),
    CliCase('merge-missing-shard', ('merge', '{index}', '{tmp}/none', '--output', '{tmp}/m'),
            r"merge: error: no index at .*none"),
    CliCase('merge-corrupt-shard', ('merge', '{index}', '{corrupt}', '--output', '{tmp}/m'),
            r"merge: error: .*vecs\.f4 is truncated or corrupt"),
    CliCase('index-over-existing', ('index', '{model}', DATASET, '{index}'),
            r"index: error: .* already exists; pass --overwrite to replace it"),
    CliCase('train-corrupt-weights', ('train', '{corrupt_model}', 'lareqa/mlqa-r', '{tmp}/t', '--steps', '2'),
            r"train: error: .*model\.safetensors .*corrupt"),
    CliCase('train-steps-text', ('train', '{model}', 'lareqa/mlqa-r', '{tmp}/t', '--steps', 'forty'),
            r"steps.*'forty'"),
]


class YamlCase(NamedTuple):
    name: str
    text: str
    pattern: str


_HEAD = 'name: x\nmodels:\n  a: {pretrained: m}\ndatasets: [lareqa/xquad-r]\n'


def _train_model(train: str) -> str:
    return f'name: x\nmodels:\n  a: {{pretrained: m}}\n  b:\n    train: {{base: a, data: lareqa/mlqa-r, {train}}}\n' \
           'datasets: [lareqa/xquad-r]\n'


YAML_CASES = [
    YamlCase('unknown-top-key', _HEAD + 'mesures: [AP]\n',
             r"exp\.yaml:5: mesures: unknown key 'mesures'; valid: baseline, comparisons, correction, datasets"),
    YamlCase('unknown-model-key', 'name: x\nmodels:\n  a: {pretrained: m, batchsize: 8}\ndatasets: [lareqa/xquad-r]\n',
             r"exp\.yaml:3: models\.a\.batchsize: unknown key 'batchsize'; "
             r"valid: batch_size, bias_removal, model, pretrained, quantize, train"),
    YamlCase('unknown-measure', _HEAD + 'measures: [AP, nDCG@ten]\n',
             r"exp\.yaml:5: measures\.1: unknown measure 'nDCG@ten'"),
    YamlCase('rank-distance-cutoff', _HEAD + 'measures: [RankDistance@x]\n',
             r"measures\.0: unknown measure 'RankDistance@x'"),
    YamlCase('unknown-strategy', _train_model('strategy: hybird'),
             r"exp\.yaml:5: models\.b\.train\.strategy: unknown strategy 'hybird'; valid: hybrid, xx-mono, xy, en-en"),
    YamlCase('steps-forty', _train_model('steps: forty'),
             r"exp\.yaml:5: models\.b\.train\.steps: expected an integer, not 'forty'"),
    YamlCase('steps-zero', _train_model('steps: 0'), r"models\.b\.train\.steps: must be a positive number, not 0"),
    YamlCase('steps-negative', _train_model('steps: -5'), r"models\.b\.train\.steps: must be a positive number"),
    YamlCase('alpha-out-of-range', _train_model('alpha: 1.5'), r"models\.b\.train\.alpha: must lie in \[0, 1\]"),
    YamlCase('train-from-itself', _train_model('strategy: xy').replace('base: a', 'base: b'),
             r"models\.b\.train\.base: a model cannot be trained from itself"),
    YamlCase('lexicon-missing', _train_model('code_switching: {lexicons: [none.txt]}'),
             r"models\.b\.train\.code_switching\.lexicons\.0: lexicon file .*none\.txt does not exist"),
    YamlCase('unknown-language', _HEAD + 'languages: [de, xx]\n',
             r"exp\.yaml:5: languages\.1: unknown language 'xx'; valid: ar, de, el"),
    YamlCase('unknown-dataset', 'name: x\nmodels: {a: {pretrained: m}}\ndatasets: [no-such/dataset]\n',
             r"exp\.yaml:3: datasets\.0: unknown data set 'no-such/dataset'"),
    YamlCase('unknown-dataset-language', 'name: x\nmodels: {a: {pretrained: m}}\ndatasets:\n  - lareqa/xquad-r/fr\n',
             r"exp\.yaml:4: datasets\.0: unknown data set 'lareqa/xquad-r/fr': unknown language 'fr'"),
    YamlCase('unknown-setting', _HEAD + 'settings: [Mono, [de, en]]\n',
             r"settings\.0: unknown setting 'Mono'; valid: Mo, Cr, Mul or a \[query_lang, doc_lang\] pair"),
    YamlCase('unknown-baseline', _HEAD + 'baseline: b\n', r"exp\.yaml:5: baseline: unknown model 'b'; valid: a"),
    YamlCase('unknown-correction', _HEAD + 'correction: magic\n',
             r"correction: unknown correction 'magic'; valid: holm, bonferroni"),
    YamlCase('run-depth-negative', _HEAD + 'run_depth: -1\n', r"run_depth: run_depth is a number of documents >= 0"),
    YamlCase('pretrained-and-train', 'name: x\nmodels: {a: {pretrained: m, train: {}}}\ndatasets: [lareqa/xquad-r]\n',
             r"models\.a: a model has exactly one of pretrained: \(a Hub id or path\), train: \{\.\.\.\} or model:"),
    YamlCase('missing-name', 'models: {a: {pretrained: m}}\ndatasets: [lareqa/xquad-r]\n',
             r"exp\.yaml:1: top: missing required key 'name'"),
    YamlCase('not-a-mapping', '- name: x\n', r"top: an experiment file is a mapping with name, models, datasets"),
    YamlCase('not-yaml', 'name: [unclosed\n', r"exp\.yaml: not valid YAML"),
]
