"""DenseIndex: exact and approximate search, subsets, metadata, artifact loading, atomic writes, integrity, encoder
checks, sharding. Concurrent and interrupted builds: test_index_safety.py; Hub round trip: test_index_artifact.py."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
from conftest import build_tiny_model
from pyterrier_dr import FlexIndex

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


@pytest.mark.parametrize('num_results', [0, -5, 2.5])
def test_num_results_must_be_positive(built, num_results):
    index, _ = built
    with pytest.raises(ValueError, match=f'num_results must be a positive integer.*not {num_results}'):
        index.retriever(num_results=num_results)


def test_retrievers_compare_like_pyterrier_drs(built):
    index, corpus = built
    german = [d['docno'] for d in corpus if d['docno'].startswith('de-')]
    same = DenseIndex(index.index_path).retriever(10, method='hnsw', docnos=reversed(german), ef_search=64)
    retriever = index.retriever(10, method='hnsw', docnos=german)
    assert retriever == same and hash(retriever) == hash(same) and len({retriever, same}) == 1
    others = [index.retriever(10, method='hnsw'), index.retriever(10, method='hnsw', docnos=german[:5]),
              index.retriever(20, method='hnsw', docnos=german), index.retriever(10, docnos=german),
              index.retriever(10, method='hnsw', docnos=german, ef_search=128)]
    assert all(retriever != other for other in others) and len({retriever, *others}) == 6
    assert repr(retriever) == (f"DenseIndex({str(index.index_path)!r}).retriever(num_results=10, method='hnsw', "
                               "neighbours=32, ef_construction=40, ef_search=64, docnos=<250 docs>)")
    assert retriever.fuse_rank_cutoff(5) == index.retriever(5, method='hnsw', docnos=german)
    assert pt.inspect.subtransformers(retriever) == {}


def test_reopens_with_metadata_without_reencoding(built, tiny_encoder, tmp_path):
    index, _ = built
    reopened = DenseIndex(index.index_path)
    assert reopened.metadata['doc_count'] == 500 and reopened.metadata['vec_size'] == 16
    assert len(reopened.retriever(num_results=5)(queries())) == 35
    loaded = pt.Artifact.load(str(index.index_path))
    assert isinstance(loaded, DenseIndex), 'no pyterrier.artifact entry point: reinstall the package (pip install -e .)'
    assert loaded.retriever(num_results=5) == index.retriever(num_results=5)
    top5 = loaded.retriever(num_results=5)(queries())
    pd.testing.assert_frame_equal(top5, reopened.retriever(num_results=5)(queries()))

    docs = [{'docno': f'd{i}', 'text': t} for i, t in enumerate(['one document', 'another document', 'third'])]
    encoded = DenseIndex(tmp_path / 'encoded')
    (tiny_encoder >> encoded).index(docs)
    meta = json.loads((tmp_path / 'encoded' / 'pt_meta.json').read_text())
    assert meta['model'] == str(tiny_encoder.model_name) and meta['dimension'] == 32
    assert meta['similarity'] == 'cosine' and meta['doc_count'] == 3
    result = (tiny_encoder >> DenseIndex(tmp_path / 'encoded').retriever(num_results=2))(
        pd.DataFrame({'qid': ['1'], 'query': ['another document']}))
    assert list(result['docno']) == ['d1', 'd0']


def test_plain_flex_indexes_stay_pyterrier_drs_and_open_as_dense_indexes(tmp_path):
    corpus = random_corpus(n=50)
    FlexIndex(str(tmp_path / 'plain'), verbose=False).index(corpus)
    assert type(pt.Artifact.load(str(tmp_path / 'plain'))) is FlexIndex
    topics = queries()
    assert ranking(DenseIndex(tmp_path / 'plain').retriever(num_results=5)(topics)) == brute_force(corpus, topics, 5)


def test_refuses_another_model_of_the_same_dimension_unless_allowed(tmp_path, tiny_encoder):
    from pyterrier_hybrid import HybridEncoder
    other = HybridEncoder.from_pretrained(build_tiny_model(tmp_path / 'other-model'))
    assert other.dimension == tiny_encoder.dimension
    docs = [{'docno': 'd0', 'text': 'one document'}, {'docno': 'd1', 'text': 'another document'}]
    (tiny_encoder >> DenseIndex(tmp_path / 'idx')).index(docs)
    with pytest.raises(IncompatibleEncoderError, match=f"built by '{tiny_encoder.model_name}', not by the query "
                                                      f"encoder '{other.model_name}'.*allow_other_encoder=True"):
        other >> DenseIndex(tmp_path / 'idx').retriever()
    allowed = other >> DenseIndex(tmp_path / 'idx', allow_other_encoder=True).retriever(num_results=2)
    assert len(allowed(pd.DataFrame({'qid': ['1'], 'query': ['another document']}))) == 2
    tiny_encoder >> DenseIndex(tmp_path / 'idx').retriever()  # the model that built it


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


def test_overwrite_replaces_an_index_of_another_encoder_or_a_corrupt_one(built, tiny_encoder):
    index, _ = built
    docs = [{'docno': 'd0', 'text': 'one document'}, {'docno': 'd1', 'text': 'another document'}]
    (tiny_encoder >> index.indexer(mode='overwrite')).index(docs)  # 16-d random vectors -> the 32-d encoder
    assert (index.metadata['vec_size'], index.metadata['model']) == (32, str(tiny_encoder.model_name))
    (index.index_path / 'vecs.f4').write_bytes(b'')
    (tiny_encoder >> index.indexer(mode='overwrite')).index(docs[::-1])
    assert list(DenseIndex(index.index_path).docnos()) == ['d1', 'd0']


def test_duplicate_missing_and_non_finite_documents(tmp_path):
    corpus = random_corpus(n=5)
    with pytest.raises(ValueError, match="duplicate docno 'en-0000'"):
        DenseIndex(tmp_path / 'dup').indexer().index(corpus + corpus[:1])
    corpus[3]['doc_vec'][2] = np.nan
    with pytest.raises(ValueError, match="vector of 'de-0003' holds NaN"):
        DenseIndex(tmp_path / 'nan').indexer().index(corpus)
    with pytest.raises(ValueError, match='no documents'):
        DenseIndex(tmp_path / 'empty').indexer().index([])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


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


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite_vectors_in_the_file_are_reported_by_file(built, value):
    index, _ = built
    vecs = np.memmap(index.index_path / 'vecs.f4', dtype=np.float32, mode='r+', shape=(500, 16))
    vecs[321, 7] = value  # a damaged file of the right size: the document silently left every ranking
    vecs.flush()
    reopened = DenseIndex(index.index_path)
    with pytest.raises(CorruptIndexError, match=r'vecs.f4 holds NaN or infinite values \(first in vector 321\)'):
        reopened.retriever()(queries())
    with pytest.raises(CorruptIndexError, match='vecs.f4'):
        reopened.vectors(['en-0000'])


def test_a_missing_index_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'no index at {tmp_path / "none"}'):
        DenseIndex(tmp_path / 'none').retriever()


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
