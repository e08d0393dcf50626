"""The LAReQA ir_datasets ids on the real XQuAD-R and MLQA-R files."""
from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import ir_datasets
import pandas as pd
import pyterrier as pt
import pytest

import pyterrier_hybrid  # noqa: F401  (registers the ids)
from pyterrier_hybrid.data import lareqa

# The table of ../shared/data/lareqa/SOURCE.md: (questions, candidates) per language.
XQUAD_R = {'ar': 1222, 'de': 1276, 'el': 1234, 'en': 1180, 'es': 1215, 'hi': 1244, 'ru': 1219, 'th': 852,
           'tr': 1167, 'vi': 1209, 'zh': 1196}
MLQA_R = {'ar': (517, 2545), 'de': (512, 2362), 'en': (1148, 6264), 'es': (500, 1787), 'hi': (507, 2426),
          'vi': (511, 2828), 'zh': (504, 2322)}


@pytest.mark.parametrize('lang', sorted(XQUAD_R))
def test_xquad_r_counts_match_source_table(lareqa_dir, lang):
    mo = ir_datasets.load(f'lareqa/xquad-r/{lang}/{lang}')
    assert mo.docs_count() == XQUAD_R[lang]
    assert sum(1 for _ in mo.queries_iter()) == 1190
    assert sum(1 for _ in mo.qrels_iter()) == 1190


@pytest.mark.parametrize('lang', sorted(MLQA_R))
def test_mlqa_r_counts_match_source_table(lareqa_dir, lang):
    questions, candidates = MLQA_R[lang]
    mo = ir_datasets.load(f'lareqa/mlqa-r/{lang}/{lang}')
    assert mo.docs_count() == candidates
    assert sum(1 for _ in mo.queries_iter()) == questions


def test_mul_is_the_pooled_corpus_with_an_answer_per_language(lareqa_dir):
    mul = ir_datasets.load('lareqa/xquad-r/de')
    docs = list(mul.docs_iter())
    assert len(docs) == mul.docs_count() == sum(XQUAD_R.values()) == 13014
    assert len({d.doc_id for d in docs}) == len(docs)
    per_query = Counter(q.query_id for q in mul.qrels_iter())
    assert len(per_query) == 1190 and set(per_query.values()) == {11}
    assert ir_datasets.load('lareqa/mlqa-r/en').docs_count() == sum(c for _, c in MLQA_R.values()) == 20534


def test_answer_sentence_contains_the_answer(lareqa_dir):
    dataset = ir_datasets.load('lareqa/xquad-r/de')
    store = dataset.docs_store()
    qrels = [q for q in dataset.qrels_iter() if q.query_id == 'de-56beb4343aeaaa14008c925b']
    relevant = {store.get(q.doc_id).lang: store.get(q.doc_id) for q in qrels}
    assert relevant['de'].doc_id == 'de-0000-0'
    assert '308' in relevant['de'].text and relevant['de'].text in relevant['de'].context
    assert '308' in relevant['en'].text and relevant['en'].doc_id.startswith('en-0000-')
    query = next(q for q in dataset.queries_iter() if q.query_id == 'de-56beb4343aeaaa14008c925b')
    assert query.text == 'Wie viele Punkte gab die Verteidigung der Panthers ab?' and query.lang == 'de'


def test_mlqa_r_cross_pair_keeps_only_answerable_questions(lareqa_dir):
    pair = ir_datasets.load('lareqa/mlqa-r/de/ar')
    queries = {q.query_id for q in pair.queries_iter()}
    qrels = list(pair.qrels_iter())
    assert len(queries) == lareqa.lareqa_query_counts('mlqa-r')['de', 'ar'] == 207
    assert {q.query_id for q in qrels} == queries and len(qrels) == 207
    assert all(q.doc_id.startswith('ar-') for q in qrels)
    relevant = Counter(q.query_id for q in ir_datasets.load('lareqa/mlqa-r/de').qrels_iter())
    assert min(relevant.values()) >= 2 and max(relevant.values()) <= 7


def test_pyterrier_sees_the_ids(lareqa_dir):
    dataset = pt.get_dataset('irds:lareqa/xquad-r/th/en')
    topics = dataset.get_topics('text')
    assert list(topics.columns) == ['qid', 'query'] and len(topics) == 1190
    assert topics['qid'].str.startswith('th-').all()
    corpus = list(dataset.get_corpus_iter(verbose=False))
    assert len(corpus) == 1180 and {'docno', 'text', 'context', 'lang'} <= set(corpus[0])
    assert set(dataset.get_qrels()['docno'].str[:3]) == {'en-'}
    texts = pt.text.get_text(dataset, ['text', 'context'])(pd.DataFrame({'qid': ['1'], 'docno': ['en-0000-0']}))
    assert texts['text'][0] in texts['context'][0] and texts['text'][0].startswith('The Panthers defense')


def test_get_topics_has_a_query_column_and_the_language_stays_available(lareqa_dir, capsys):
    dataset = pt.get_dataset('irds:lareqa/xquad-r/de')
    topics = dataset.get_topics()
    assert list(topics.columns) == ['qid', 'query'] and len(topics) == 1190
    assert 'multiple query fields' not in capsys.readouterr().out
    assert topics.equals(dataset.get_topics('text')) and dataset.get_topics_lang() == 'de'
    pooled = pt.get_dataset('irds:lareqa/mlqa-r').get_topics()
    assert set(pooled['qid'].str.split('-').str[0]) == set(lareqa.COLLECTIONS['mlqa-r'])
    assert {q.lang for q in ir_datasets.load('lareqa/mlqa-r').queries_iter()} == set(lareqa.COLLECTIONS['mlqa-r'])


def _installed_entry_point() -> bool:
    return any(ep.value.split(':')[0] == 'pyterrier_hybrid'
               for ep in importlib.metadata.entry_points(group='pyterrier.modules'))


@pytest.mark.skipif(not _installed_entry_point(), reason="pyterrier_hybrid's pyterrier.modules entry point is not "
                    'installed in this interpreter (pip install -e . to test it)')
def test_irds_ids_resolve_after_a_plain_import_pyterrier(lareqa_dir):
    code = ('import sys, pyterrier as pt\n'
            "topics = pt.get_dataset('irds:lareqa/xquad-r/de/en').get_topics()\n"
            "print(len(topics), list(topics.columns), [m for m in ('torch', 'transformers', "
            "'sentence_transformers') if m in sys.modules])\n")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1],
                          env={**os.environ, lareqa.ENV_DIR: str(lareqa_dir)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split('\n')[-2] == "1190 ['qid', 'query'] []"


def test_unknown_language_lists_valid_ones(lareqa_dir):
    with pytest.raises(KeyError, match="unknown language 'fr' .*valid: ar, de, el, en, es, hi, ru, th, tr, vi, zh"):
        ir_datasets.load('lareqa/xquad-r/de/fr')
    with pytest.raises(KeyError, match="unknown language 'el' for lareqa/mlqa-r"):
        ir_datasets.load('lareqa/mlqa-r/el')
    with pytest.raises(KeyError, match='valid: xquad-r, mlqa-r'):
        ir_datasets.load('lareqa/tydi-r/en')


@pytest.fixture
def local_copy(tmp_path, lareqa_dir):
    """A writable copy of the XQuAD-R German file, set as the LAReQA directory for one test."""
    (tmp_path / 'xquad-r').mkdir()
    shutil.copy(lareqa_dir / 'xquad-r' / 'de.json', tmp_path / 'xquad-r' / 'de.json')
    lareqa.set_lareqa_dir(tmp_path)
    yield tmp_path
    lareqa.set_lareqa_dir(None)


def test_checksum_mismatch_names_file_and_both_sums(local_copy):
    path = local_copy / 'xquad-r' / 'de.json'
    path.write_bytes(path.read_bytes().replace(b'Panthers', b'Panther!', 1))
    with pytest.raises(lareqa.ChecksumError) as error:
        lareqa.source_path('xquad-r', 'de')
    message = str(error.value)
    assert str(path) in message and lareqa.SHA256['xquad-r/de.json'] in message
    assert lareqa._sha256(path) in message


def test_missing_directory_says_how_to_set_it(tmp_path):
    lareqa.set_lareqa_dir(tmp_path / 'nowhere')
    try:
        with pytest.raises(FileNotFoundError, match='PYTERRIER_HYBRID_LAREQA_DIR'):
            next(ir_datasets.load('lareqa/xquad-r/en/en').docs_iter())
    finally:
        lareqa.set_lareqa_dir(None)


class _Response(io.BytesIO):
    """A fake HTTP response: serves ``body`` and then, optionally, fails mid-stream."""

    def __init__(self, body: bytes, fail_after: int | None = None):
        super().__init__(body)
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError('connection reset by peer')
        return super().read(min(size, self.fail_after - self.tell()) if self.fail_after else size)

    def __exit__(self, *args):
        self.close()


@pytest.fixture
def download_home(tmp_path, monkeypatch):
    """Downloads go to a fresh ir_datasets home; no local directory is set."""
    monkeypatch.delenv(lareqa.ENV_DIR, raising=False)
    monkeypatch.setattr(ir_datasets.util, 'home_path', lambda: tmp_path)
    lareqa.set_lareqa_dir(None)
    yield tmp_path
    lareqa.set_lareqa_dir(None)


def test_download_verifies_and_places_the_file(download_home, lareqa_dir, monkeypatch):
    body = (lareqa_dir / 'xquad-r' / 'el.json').read_bytes()
    urls = []
    monkeypatch.setattr(lareqa.urllib.request, 'urlopen', lambda url, timeout: urls.append(url) or _Response(body))
    path = lareqa.source_path('xquad-r', 'el')
    assert path == download_home / 'lareqa' / 'xquad-r' / 'el.json' and path.read_bytes() == body
    assert urls == [f'{lareqa._UPSTREAM}/{lareqa._COMMITS["xquad-r"]}/xquad-r/el.json']
    lareqa.source_path('xquad-r', 'el')
    assert len(urls) == 1, 'a verified file is not downloaded again'


@pytest.mark.parametrize('failure', ['interrupted', 'corrupt'])
def test_failed_download_leaves_no_partial_file(download_home, monkeypatch, failure):
    response = _Response(b'x' * (3 << 20), fail_after=(2 << 20)) if failure == 'interrupted' else _Response(b'{}')
    monkeypatch.setattr(lareqa.urllib.request, 'urlopen', lambda url, timeout: response)
    expected = ConnectionResetError if failure == 'interrupted' else lareqa.ChecksumError
    with pytest.raises(expected):
        lareqa.source_path('mlqa-r', 'vi')
    leftovers = [p for p in Path(download_home).rglob('*') if p.is_file()]
    assert leftovers == []
