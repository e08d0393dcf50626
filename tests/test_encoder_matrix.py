"""HybridEncoder gives SentenceTransformer.encode's vectors for every kind of checkpoint (#13): each pooling mode,
with and without a Dense head and Normalize, with and without prompts, truncated, and a plain Hugging Face
checkpoint; on real LAReQA text in eight scripts. The checkpoints are tiny BERTs saved by sentence-transformers."""
from __future__ import annotations

import itertools
from pathlib import Path

import ir_datasets
import numpy as np
import pytest
from conftest import build_tiny_model

from pyterrier_hybrid import HybridEncoder

LANGUAGES = ('ar', 'de', 'el', 'en', 'hi', 'ru', 'th', 'zh')  # Arabic, Latin, Greek, Devanagari, Cyrillic, Thai, Han
PROMPTS = {'query': 'query: ', 'passage': 'passage: '}


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """A 2-layer, 32-dim model gains nothing from threads, and on a busy machine their spinning costs 10x."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def texts(lareqa_dir) -> dict[str, list[str]]:
    """Per kind, real XQuAD-R text: questions, answer sentences, and whole paragraphs (longer than any model here)."""
    import pyterrier_hybrid.data.lareqa  # noqa: F401  (registers lareqa in ir_datasets)
    out = {'queries': [], 'sentences': [], 'paragraphs': []}
    for lang in LANGUAGES:
        dataset = ir_datasets.load(f'lareqa/xquad-r/{lang}/{lang}')
        docs = list(itertools.islice(dataset.docs_iter(), 40))
        out['queries'] += [q.text for q, _ in zip(dataset.queries_iter(), range(4))]
        out['sentences'] += [d.text for d in docs[::10]]
        out['paragraphs'] += list(dict.fromkeys(d.context for d in docs))[:2]
    return out


@pytest.fixture(scope='module')
def bert(tmp_path_factory, texts) -> Path:
    """A tiny BERT whose WordPiece vocabulary knows these scripts, so texts are tokens rather than [UNK]s."""
    vocabulary = texts['queries'] + texts['sentences'] + texts['paragraphs']
    return build_tiny_model(tmp_path_factory.mktemp('multilingual-bert'), texts=vocabulary, vocab_size=2000,
                            sentence_transformers_files=False)


def save_checkpoint(path: Path, bert: Path, *, pooling: str, dense: bool, normalize: bool, prompts: bool = True,
                    max_seq_length: int = 64, similarity: str = 'cosine') -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    torch.manual_seed(0)
    modules = [Transformer(str(bert), max_seq_length=max_seq_length), Pooling(32, pooling_mode=pooling)]
    modules += [Dense(32, 24)] if dense else []  # LaBSE's head: CLS -> Dense (tanh) -> Normalize
    modules += [Normalize()] if normalize else []
    model = SentenceTransformer(modules=modules, prompts=PROMPTS if prompts else None, device='cpu',
                                similarity_fn_name=similarity)
    model.save(str(path), create_model_card=False)
    return path


CASES = [dict(pooling=pooling, dense=dense, normalize=normalize)
         for pooling in ('mean', 'cls', 'max', 'weightedmean', 'lasttoken')
         for dense in (False, True) for normalize in (False, True)]
CASES += [dict(pooling='mean', dense=False, normalize=True, prompts=False),
          dict(pooling='cls', dense=True, normalize=True, max_seq_length=12),
          dict(pooling='max', dense=True, normalize=False, similarity='dot')]


def case_id(case: dict) -> str:
    return '-'.join(f'{k}={v}' for k, v in case.items())


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_vectors_are_sentence_transformers_vectors(tmp_path, bert, texts, case):
    from sentence_transformers import SentenceTransformer
    path = save_checkpoint(tmp_path / 'checkpoint', bert, **case)
    encoder = HybridEncoder.from_pretrained(path, batch_size=5, device='cpu')
    reference = SentenceTransformer(str(path), device='cpu')
    dimension = 24 if case['dense'] else 32
    assert encoder.dimension == reference.get_embedding_dimension() == dimension
    assert encoder.index_metadata()['dimension'] == dimension
    config = encoder.encoder_config
    assert config.pooling == case['pooling'] and ('Dense' in config.modules) == case['dense']
    assert config.max_length == case.get('max_seq_length', 64)
    assert (config.query_prefix, config.doc_prefix) == (('query: ', 'passage: ') if case.get('prompts', True)
                                                       else ('', ''))
    for kind, ours, prompt_name in [('queries', encoder.encode_queries(texts['queries']), 'query'),
                                    ('sentences', encoder.encode_docs(texts['sentences']), 'passage'),
                                    ('paragraphs', encoder.encode_docs(texts['paragraphs']), 'passage')]:
        theirs = reference.encode(texts[kind], prompt_name=prompt_name if case.get('prompts', True) else None)
        assert ours.shape == theirs.shape == (len(texts[kind]), dimension)
        cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cosine.min() >= 0.99999, (kind, cosine.min())
        if case.get('similarity') == 'dot':  # vectors as they are, lengths included
            np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(theirs, axis=1), rtol=1e-5)
        else:  # cosine is served as inner product over unit vectors, with or without a Normalize module
            np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, rtol=1e-5)


def test_paragraphs_are_truncated_as_sentence_transformers_truncates(bert, texts, tmp_path):
    path = save_checkpoint(tmp_path / 'checkpoint', bert, pooling='mean', dense=False, normalize=True,
                           max_seq_length=12)
    encoder = HybridEncoder.from_pretrained(path, device='cpu')
    tokenizer = encoder.model.tokenizer
    assert all(len(tokenizer('passage: ' + p)['input_ids']) > 12 for p in texts['paragraphs'])
    cut = [p + ' ' + texts['sentences'][0] for p in texts['paragraphs']]  # differs only past the 12th token
    np.testing.assert_allclose(encoder.encode_docs(cut), encoder.encode_docs(texts['paragraphs']), atol=1e-6)


def test_a_plain_hugging_face_checkpoint_is_loaded_as_sentence_transformers_loads_it(bert, texts):
    from sentence_transformers import SentenceTransformer
    encoder = HybridEncoder.from_pretrained(bert, device='cpu')
    reference = SentenceTransformer(str(bert), device='cpu')
    config = encoder.encoder_config
    assert (config.modules, config.pooling, config.query_prefix, config.doc_prefix) == \
        (('Transformer', 'Pooling'), 'mean', '', '')
    assert config.max_length == reference.max_seq_length and encoder.dimension == 32
    ours, theirs = encoder.encode_docs(texts['sentences']), reference.encode(texts['sentences'])
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.99999


def test_batches_are_sorted_by_tokens_not_characters(bert, texts, tmp_path, monkeypatch):
    """sentence-transformers sorts by characters; across scripts that batches texts of very different token counts."""
    path = save_checkpoint(tmp_path / 'checkpoint', bert, pooling='mean', dense=False, normalize=True)
    encoder = HybridEncoder.from_pretrained(path, batch_size=4, device='cpu')
    batches, encode = [], encoder.model.encode
    monkeypatch.setattr(encoder.model, 'encode', lambda inputs, **kw: batches.append(inputs) or encode(inputs, **kw))
    sentences = texts['sentences']
    vectors = encoder.encode_docs(sentences)
    tokens = {s: len(encoder.model.tokenizer('passage: ' + s, truncation=True, max_length=64)['input_ids'])
              for s in sentences}
    by_characters = sorted(sentences, key=len, reverse=True)
    assert [tokens[s] for s in by_characters] != sorted(tokens.values(), reverse=True)  # the orders differ here
    assert [len(b) for b in batches] == [4] * (len(sentences) // 4) + ([len(sentences) % 4] if len(sentences) % 4
                                                                      else [])
    assert all(min(tokens[s] for s in a) >= max(tokens[s] for s in b) for a, b in zip(batches, batches[1:]))
    np.testing.assert_allclose(vectors, np.stack([encode([s], prompt='passage: ')[0] for s in sentences]), atol=1e-5)
