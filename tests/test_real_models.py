"""Integration: the real multilingual-e5-small and all-MiniLM-L6-v2 on real LAReQA text."""
from __future__ import annotations

import ir_datasets
import numpy as np
import pytest

from pyterrier_hybrid import HybridEncoder

pytestmark = pytest.mark.slow  # see pyproject.toml


@pytest.fixture(scope='module')
def lareqa_texts(lareqa_dir) -> tuple[list[str], list[str]]:
    """Questions and candidate sentences in all 11 XQuAD-R languages."""
    dataset = ir_datasets.load('lareqa/xquad-r')
    docs = [d.text for i, d in enumerate(dataset.docs_iter()) if i % 400 == 0]
    queries = [q.text for i, q in enumerate(dataset.queries_iter()) if i % 400 == 0]
    return queries, docs


@pytest.mark.parametrize('name', ['multilingual-e5-small', 'all-MiniLM-L6-v2'])
def test_agrees_with_sentence_transformers(offline_models, lareqa_texts, name):
    from sentence_transformers import SentenceTransformer
    path = offline_models[name]
    encoder = HybridEncoder.from_pretrained(path, batch_size=8)
    reference = SentenceTransformer(str(path), device='cpu')
    queries, docs = lareqa_texts
    prompts = reference.prompts or {}
    for texts, ours, prompt in [(queries, encoder.encode_queries(queries), 'query'),
                                (docs, encoder.encode_docs(docs), 'passage')]:
        theirs = reference.encode(texts, prompt_name=prompt if prompt in prompts else None, normalize_embeddings=True)
        assert ours.shape == theirs.shape
        assert (ours * theirs).sum(1).min() >= 0.9999


def test_me5_config_and_a_real_answer(offline_models):
    encoder = HybridEncoder.from_pretrained(offline_models['multilingual-e5-small'])
    config = encoder.encoder_config
    assert (config.pooling, config.query_prefix, config.doc_prefix, encoder.dimension) == \
        ('mean', 'query: ', 'passage: ', 384)
    question = encoder.encode_queries(['Wie viele Punkte gab die Verteidigung der Panthers ab?'])[0]
    candidates = encoder.encode_docs(['The Panthers defense gave up just 308 points.',
                                      'The Broncos won Super Bowl 50.', 'Paris is the capital of France.'])
    assert int(np.argmax(candidates @ question)) == 0
