"""DenseIndex: exact and approximate search, subsets, metadata, atomic writes, integrity, sharding."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_hybrid import CorruptIndexError, DenseIndex, IncompatibleEncoderError, shard_corpus


def random_corpus(n: int = 500, dim: int = 16, seed: int = 0) -> list[dict]:
    vecs = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return [{'docno': f'{"de" if i % 2 else "en"}-{i:04d}', 'doc_vec': v} for i, v in enumerate(vecs)]


def queries(n: int = 7, dim: int = 16, seed: int = 1) -> pd.DataFrame:
    vecs = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return pd.DataFrame({'qid': [f'q{i}' for i in range(n)], 'query': ['x'] * n, 'query_vec': list(vecs)})


@pytest.fixture
def built(tmp_path):
    corpus = random_corpus()
    return DenseIndex(tmp_path / 'idx').indexer().index(corpus), corpus


def brute_force(corpus: list[dict], topics: pd.DataFrame, k: int, subset=None) -> list[list[str]]:
    docs = [d for d in corpus if subset is None or d['docno'] in subset]
    scores = np.stack(topics['query_vec']) @ np.stack([d['doc_vec'] for d in docs]).T
    return [[docs[j]['docno'] for j in np.argsort(-row, kind='stable')[:k]] for row in scores]


def ranking(result: pd.DataFrame) -> list[list[str]]:
    return [list(g.sort_values('rank')['docno']) for _, g in result.groupby('qid', sort=True)]


def test_exact_search_equals_brute_force(built):
    index, corpus = built
    topics = queries()
    result = index.retriever(num_results=20)(topics)
    assert ranking(result) == brute_force(corpus, topics, 20)
    assert {'qid', 'query', 'query_vec', 'docno', 'docid', 'score', 'rank'} == set(result.columns)
    everything = index.retriever(num_results=None, drop_query_vec=True)(topics)
    assert len(everything) == 7 * 500 and 'query_vec' not in everything.columns
    assert everything.groupby('qid')['rank'].min().eq(0).all()


def test_subset_search_equals_brute_force_on_the_subset(built):
    index, corpus = built
    topics = queries()
    german = [d['docno'] for d in corpus if d['docno'].startswith('de-')]
    result = index.retriever(num_results=None, docnos=german)(topics)
    assert ranking(result) == brute_force(corpus, topics, 250, subset=set(german))
    with pytest.raises(KeyError, match='1 docno.*fr-0001'):
        index.retriever(docnos=['de-0001', 'fr-0001'])


@pytest.mark.parametrize('method,params', [('hnsw', {'neighbours': 16, 'ef_search': 128}),
                                           ('ivfpq', {'n_list': 8, 'pq_m': 8, 'n_probe': 8})])
def test_approximate_search_finds_most_neighbours_and_caches(built, method, params):
    index, corpus = built
    topics = queries()
    exact = brute_force(corpus, topics, 10)
    approx = ranking(index.retriever(num_results=10, method=method, **params)(topics))
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert overlap >= (0.9 if method == 'hnsw' else 0.5)
    assert len(list(index.index_path.glob(f'*.{method}.faiss'))) == 1
    german = [d['docno'] for d in corpus if d['docno'].startswith('de-')]
    restricted = index.retriever(num_results=10, method=method, docnos=german, **params)(topics)
    assert restricted['docno'].str.startswith('de-').all()
    with pytest.raises(TypeError, match='unknown parameter.*valid:'):
        index.retriever(method=method, n_lists=3)
    with pytest.raises(ValueError, match='valid: flat, hnsw, ivfpq'):
        index.retriever(method='lsh')


def test_reopens_with_metadata_without_reencoding(built, tiny_encoder, tmp_path):
    index, _ = built
    reopened = DenseIndex(index.index_path)
    assert reopened.metadata['doc_count'] == 500 and reopened.metadata['vec_size'] == 16
    assert len(reopened.retriever(num_results=5)(queries())) == 35
    loaded = pt.Artifact.load(str(index.index_path))  # pyterrier-dr's own loader reads it too
    assert len(loaded) == 500

    docs = [{'docno': f'd{i}', 'text': t} for i, t in enumerate(['one document', 'another document', 'third'])]
    encoded = DenseIndex(tmp_path / 'encoded')
    (tiny_encoder >> encoded).index(docs)
    meta = json.loads((tmp_path / 'encoded' / 'pt_meta.json').read_text())
    assert meta['model'] == str(tiny_encoder.model_name) and meta['dimension'] == 32
    assert meta['similarity'] == 'cosine' and meta['doc_count'] == 3
    result = (tiny_encoder >> DenseIndex(tmp_path / 'encoded').retriever(num_results=2))(
        pd.DataFrame({'qid': ['1'], 'query': ['another document']}))
    assert list(result['docno']) == ['d1', 'd0']


def test_refuses_an_encoder_that_does_not_match(built, tiny_encoder, tiny_model, tmp_path):
    index, _ = built
    with pytest.raises(IncompatibleEncoderError, match='16-dimensional.*produces 32 dimensions'):
        tiny_encoder >> index.retriever()
    with pytest.raises(IncompatibleEncoderError, match='query vectors have 3 dimensions'):
        index.retriever()(pd.DataFrame({'qid': ['1'], 'query': ['x'], 'query_vec': [np.ones(3, np.float32)]}))
    cosine = DenseIndex(tmp_path / 'cos')
    (tiny_encoder >> cosine).index([{'docno': 'd0', 'text': 'a document'}, {'docno': 'd1', 'text': 'another'}])
    from pyterrier_hybrid import HybridEncoder
    dot = HybridEncoder.from_pretrained(tiny_model, similarity='dot')
    with pytest.raises(IncompatibleEncoderError, match='built for cosine similarity.*uses dot'):
        dot >> DenseIndex(tmp_path / 'cos')


def test_empty_query_frame_gives_empty_results(built):
    index, _ = built
    result = index.retriever()(queries().iloc[:0])
    assert len(result) == 0 and {'docno', 'score', 'rank'} <= set(result.columns)


def test_failed_build_leaves_nothing_and_overwrite_keeps_the_old_index(built, tmp_path):
    def failing(corpus):
        yield from corpus[:100]
        raise RuntimeError('encoder crashed')

    index, corpus = built
    fresh = DenseIndex(tmp_path / 'fresh')
    with pytest.raises(RuntimeError, match='encoder crashed'):
        fresh.indexer().index(failing(corpus))
    assert not fresh.index_path.exists()
    with pytest.raises(RuntimeError, match='encoder crashed'):
        index.indexer(mode='overwrite').index(failing(random_corpus(seed=5)))
    assert DenseIndex(index.index_path).metadata['doc_count'] == 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ['idx'], 'no temporary directories are left behind'
    with pytest.raises(FileExistsError, match='mode="overwrite"'):
        index.indexer().index(corpus)
    DenseIndex(index.index_path).indexer(mode='overwrite').index(random_corpus(n=10))
    assert DenseIndex(index.index_path).metadata['doc_count'] == 10


def test_duplicate_and_missing_documents(tmp_path):
    corpus = random_corpus(n=5)
    with pytest.raises(ValueError, match="duplicate docno 'en-0000'"):
        DenseIndex(tmp_path / 'dup').indexer().index(corpus + corpus[:1])
    with pytest.raises(ValueError, match='no documents'):
        DenseIndex(tmp_path / 'empty').indexer().index([])
    assert not (tmp_path / 'dup').exists() and not (tmp_path / 'empty').exists()


@pytest.mark.parametrize('damage,message', [
    (lambda p: (p / 'vecs.f4').write_bytes((p / 'vecs.f4').read_bytes()[:-4]), 'vecs.f4 is truncated'),
    (lambda p: (p / 'pt_meta.json').write_text('{"type": "dense_'), 'pt_meta.json is not valid JSON'),
    (lambda p: (p / 'pt_meta.json').unlink(), 'pt_meta.json is missing'),
    (lambda p: (p / 'docnos.npids').write_bytes(b'garbage'), 'docnos.npids cannot be read'),
])
def test_corrupt_index_is_reported_by_file(built, damage, message):
    index, _ = built
    damage(index.index_path)
    with pytest.raises(CorruptIndexError, match=message):
        DenseIndex(index.index_path).retriever()(queries())


def test_two_shards_merge_into_the_single_process_index(tmp_path):
    corpus = random_corpus(n=101)
    single = DenseIndex(tmp_path / 'single').indexer().index(corpus)
    shards = [DenseIndex(tmp_path / f'shard{i}').indexer().index(shard_corpus(iter(corpus), i, 2)) for i in (0, 1)]
    assert [len(s) for s in shards] == [51, 50]
    merged = DenseIndex.merge(shards, tmp_path / 'merged')
    assert list(merged.payload()[0]) == list(single.payload()[0])
    np.testing.assert_array_equal(merged.payload()[1], single.payload()[1])
    with pytest.raises(ValueError, match='shard must be in 0..1'):
        list(shard_corpus(corpus, 2, 2))
