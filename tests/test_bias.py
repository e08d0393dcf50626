"""Language-bias removal: synthetic embeddings with a per-language offset over shared topics, and real LAReQA text."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_hybrid.retrieval.bias import (
    LanguageBiasRemoval,
    LanguageMeans,
    MissingLanguageError,
    UnknownLanguageError,
)

LANGS = ('de', 'en', 'th')
TOPICS, DIM = 8, 24


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope='module')
def parallel():
    """A parallel corpus as a multilingual encoder embeds it: topic t in language l is topic_t + offset_l (+ noise),
    unit length; the language offsets outweigh the topics, so each language sits in its own region."""
    rng = np.random.default_rng(7)
    topics = rng.normal(size=(TOPICS, DIM))
    offsets = {lang: 2.5 * _unit(rng.normal(size=DIM)) for lang in LANGS}
    topics = _unit(topics)

    def embed(noise: float) -> pd.DataFrame:
        rows = [{'id': f'{lang}-{t}', 'topic': t, 'lang': lang,
                 'vec': _unit(topics[t] + offsets[lang] + noise * rng.normal(size=DIM)).astype(np.float32)}
                for lang in LANGS for t in range(TOPICS)]
        return pd.DataFrame(rows)
    docs = embed(0.1).rename(columns={'id': 'docno', 'vec': 'doc_vec'})
    queries = embed(0.1).rename(columns={'id': 'qid', 'vec': 'query_vec'})
    means = LanguageMeans.fit(zip(docs['doc_vec'], docs['lang']), zip(queries['query_vec'], queries['lang']))
    return docs, queries, means


def _pooled_ranks(queries: pd.DataFrame, docs: pd.DataFrame) -> np.ndarray:
    """For each query, the 1-based ranks in the pooled corpus of the documents on its topic (one per language)."""
    scores = np.stack(queries['query_vec']) @ np.stack(docs['doc_vec']).T
    rank_of = np.argsort(np.argsort(-scores, axis=1), axis=1) + 1
    same_topic = queries['topic'].to_numpy()[:, None] == docs['topic'].to_numpy()[None, :]
    return rank_of[same_topic].reshape(len(queries), len(LANGS))


def test_centring_removes_the_language_offsets_and_the_bias(parallel):
    docs, queries, means = parallel
    raw = LanguageBiasRemoval(means, normalize=False)(docs)
    for lang in LANGS:
        vectors = np.stack(raw.loc[raw['lang'] == lang, 'doc_vec'])
        assert np.abs(vectors.mean(0)).max() < 1e-6      # each language's mean is now the origin
    before = _pooled_ranks(queries, docs)
    removal = LanguageBiasRemoval(means)
    after = _pooled_ranks(removal(queries), removal(docs))
    # before: a query's own-language documents on other topics outrank its translations (rank distance > 3)
    assert (before.max(1) - before.min(1)).mean() > TOPICS
    # after: the three versions of the answer are the top three, whatever the query language
    assert (after.max(1) == len(LANGS)).all()
    vectors = np.stack(removal(docs)['doc_vec'])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6) and vectors.dtype == np.float32


def test_cross_language_query_ranks_its_translations_first(parallel):
    docs, queries, means = parallel
    removal = LanguageBiasRemoval(means)
    german, foreign = queries[queries['lang'] == 'de'], docs[docs['lang'] != 'de']
    scores = np.stack(removal(german)['query_vec']) @ np.stack(removal(foreign)['doc_vec']).T
    top_two = np.argsort(-scores, axis=1)[:, :2]
    assert (foreign['topic'].to_numpy()[top_two] == german['topic'].to_numpy()[:, None]).all()


def test_query_means_centre_queries_with_their_own_languages_query_mean(parallel):
    docs, queries, means = parallel
    by_queries = LanguageBiasRemoval(means, query_means='queries', normalize=False)(queries)
    by_docs = LanguageBiasRemoval(means, normalize=False)(queries)
    for lang in LANGS:
        of_lang = (queries['lang'] == lang).to_numpy()
        assert np.abs(np.stack(by_queries['query_vec'][of_lang]).mean(0)).max() < 1e-6
        assert np.allclose(np.stack(by_docs['query_vec'][of_lang]),
                           np.stack(queries['query_vec'][of_lang]) - means.means['doc'][lang], atol=1e-6)


@pytest.mark.parametrize('k', [1, 2])
def test_projection_removes_exactly_k_orthonormal_directions_of_the_language_means(parallel, k):
    docs, _, means = parallel
    removal = LanguageBiasRemoval(means, method='project', k=k, normalize=False)
    directions = removal.directions
    assert directions.shape == (k, DIM) and np.allclose(directions @ directions.T, np.eye(k), atol=1e-10)
    vectors = np.stack(docs['doc_vec']).astype(np.float64)
    projected = np.stack(removal(docs.drop(columns='lang'))['doc_vec']).astype(np.float64)  # no language needed
    assert np.abs(projected @ directions.T).max() < 1e-5                 # orthogonal to the removed directions
    assert np.linalg.matrix_rank(vectors - projected, tol=1e-4) == k     # exactly k directions removed
    centred = means.matrix('doc') - means.matrix('doc').mean(0)
    residual = np.linalg.norm(removal.apply(centred, side='doc'), axis=1)
    assert (residual < 1e-5).all() if k == len(LANGS) - 1 else (residual > 1e-3).any()


def test_k_outside_the_span_of_the_means_names_the_valid_range(parallel):
    _, _, means = parallel
    with pytest.raises(ValueError, match=r'k must be in 1\.\.2 .* 3 languages'):
        LanguageBiasRemoval(means, method='project', k=3)
    assert LanguageBiasRemoval(means, method='project').k == 2          # default: all the means span
    with pytest.raises(ValueError, match='does not project'):
        LanguageBiasRemoval(means, k=1)


def test_a_frame_without_a_language_column_says_how_to_supply_it(parallel):
    docs, queries, means = parallel
    with pytest.raises(MissingLanguageError, match=r"column 'lang'.*qid's prefix.*method='project'"):
        LanguageBiasRemoval(means)(queries.drop(columns='lang'))
    removal = LanguageBiasRemoval(means)
    assert pt.inspect.transformer_outputs(removal, ['qid', 'query_vec'], strict=False) is None  # inspectable
    with pytest.raises(MissingLanguageError, match="column 'lang'"):
        pt.inspect.transformer_outputs(removal, ['qid', 'query_vec'], strict=True)


def test_a_language_without_an_estimate_is_named_with_the_remedies(parallel):
    docs, _, means = parallel
    french = docs.assign(lang=np.where(docs['lang'] == 'th', 'fr', docs['lang']))
    removal = LanguageBiasRemoval(means)
    with pytest.raises(UnknownLanguageError, match=r"language\(s\) 'fr'; the means know: de, en, th.*on documents "
                                                   r"in 'fr'.*lang_map=\{'fr': 'de'\}"):
        removal(french)
    mapped = LanguageBiasRemoval(means, lang_map={'fr': 'th'})(french)
    assert np.array_equal(np.stack(mapped['doc_vec']), np.stack(removal(docs)['doc_vec']))
    with pytest.raises(ValueError, match='1 text.*without a language'):
        removal(docs.assign(lang=[None] + docs['lang'].tolist()[1:]))


def test_misfitted_statistics_are_refused(parallel):
    docs, queries, means = parallel
    doc_only = LanguageMeans.fit(zip(docs['doc_vec'], docs['lang']))
    with pytest.raises(ValueError, match=r'needs query means: fit with LanguageMeans.fit\(docs, queries\)'):
        LanguageBiasRemoval(doc_only, query_means='queries')
    with pytest.raises(ValueError, match='24-dimensional'):
        LanguageBiasRemoval(means)(docs.assign(doc_vec=[v[:8] for v in docs['doc_vec']]))
    with pytest.raises(ValueError, match='no language'):
        LanguageMeans.fit([(np.ones(3), None)])
    with pytest.raises(ValueError, match='no document vectors'):
        LanguageMeans.fit([])
    with pytest.raises(ValueError, match='at least two languages'):
        LanguageBiasRemoval(LanguageMeans.fit([(np.ones(3), 'de')]), method='project')


def test_save_and_load_round_trip_and_detect_a_mixed_save(parallel, tmp_path):
    docs, queries, means = parallel
    means.save(tmp_path / 'means')
    loaded = LanguageMeans.load(tmp_path / 'means')
    assert loaded == means and hash(loaded) == hash(means) and loaded.counts == means.counts
    for side in ('doc', 'query'):
        assert np.array_equal(loaded.matrix(side), means.matrix(side))
    assert LanguageBiasRemoval(loaded, query_means='queries') == LanguageBiasRemoval(means, query_means='queries')
    meta = json.loads((tmp_path / 'means' / 'language_means.json').read_text())
    assert meta['languages']['doc'] == list(LANGS) and meta['counts']['query'] == [TOPICS] * len(LANGS)
    assert sorted(p.name for p in (tmp_path / 'means').iterdir()) == ['language_means.json', 'language_means.npz']

    LanguageMeans.fit(zip(docs['doc_vec'][:4], docs['lang'][:4])).save(tmp_path / 'other')
    (tmp_path / 'means' / 'language_means.npz').write_bytes((tmp_path / 'other' / 'language_means.npz').read_bytes())
    with pytest.raises(ValueError, match='does not match .*language_means.json'):
        LanguageMeans.load(tmp_path / 'means')
    with pytest.raises(FileNotFoundError, match='language_means.json is missing'):
        LanguageMeans.load(tmp_path / 'nowhere')


def test_composes_with_rshift_and_is_a_no_op_on_empty_frames(parallel):
    docs, queries, means = parallel
    removal = LanguageBiasRemoval(means, method='centre+project', k=2)
    vectors = dict(zip(docs['docno'], docs['doc_vec']))
    pipeline = pt.apply.doc_vec(lambda row: vectors[row['docno']]) >> removal
    out = pipeline(docs.drop(columns='doc_vec'))
    assert np.array_equal(np.stack(out['doc_vec']),
                          removal.apply(np.stack(docs['doc_vec']), docs['lang'], side='doc'))
    empty = pd.DataFrame(columns=['qid', 'query', 'query_vec', 'lang'])
    assert removal(empty) is empty
    assert pt.inspect.transformer_outputs(removal, ['qid', 'query_vec', 'lang']) == ['qid', 'query_vec', 'lang']
    assert repr(removal).startswith('LanguageBiasRemoval(<LanguageMeans doc=de,en,th query=de,en,th dimension=24')
    assert removal == LanguageBiasRemoval(means, method='centre+project', k=2) != LanguageBiasRemoval(means)


def test_tiny_encoder_end_to_end_on_real_lareqa_sentences(tiny_encoder, lareqa_dir, tmp_path):
    """HybridEncoder >> LanguageBiasRemoval >> DenseIndex on German and Thai XQuAD-R, with the dataset's lang."""
    import pyterrier_hybrid as ph

    docs = pd.concat([pd.DataFrame(pt.get_dataset(f'irds:lareqa/xquad-r/{lang}/{lang}').get_corpus_iter(
        verbose=False)).head(6) for lang in ('de', 'th')])
    assert set(docs['lang']) == {'de', 'th'}
    encoded = tiny_encoder.doc_encoder()(docs)
    means = LanguageMeans.fit(zip(encoded['doc_vec'], encoded['lang']))
    means.save(tmp_path / 'means')
    removal = LanguageBiasRemoval(LanguageMeans.load(tmp_path / 'means'))
    index = ph.DenseIndex(tmp_path / 'de-th.index')
    index.bind_encoder(tiny_encoder)
    (tiny_encoder >> removal >> index).index(docs.to_dict(orient='records'))
    assert np.allclose(index.vectors(docs['docno']),
                       removal.apply(np.stack(encoded['doc_vec']), encoded['lang'], side='doc'), atol=1e-6)

    topics = pt.get_dataset('irds:lareqa/xquad-r/de/th').get_topics().head(3)
    topics = topics.assign(lang=topics['qid'].str.split('-').str[0])
    results = (tiny_encoder >> removal >> index.retriever(num_results=None))(topics)
    assert len(results) == 3 * len(docs) and set(results['qid']) == set(topics['qid'])
    with pytest.raises(MissingLanguageError):
        (tiny_encoder >> removal >> index.retriever())(topics.drop(columns='lang'))
