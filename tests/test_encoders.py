"""HybridEncoder on tiny models built in the test: config reading, agreement with sentence-transformers,
PyTerrier modes, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch
from conftest import TINY_TEXTS, build_tiny_model

from pyterrier_hybrid import EncoderConfig, HybridEncoder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_reads_the_checkpoint_config(tiny_encoder, tiny_model):
    assert tiny_encoder.encoder_config == EncoderConfig(pooling='mean', normalize=True, query_prefix='query: ',
                                                        doc_prefix='passage: ', max_length=48, similarity='cosine')
    overridden = HybridEncoder.from_pretrained(tiny_model, query_prefix='', pooling='cls', max_length=16)
    assert overridden.encoder_config.query_prefix == '' and overridden.encoder_config.pooling == 'cls'
    assert overridden.max_length == 16
    with pytest.raises(ValueError, match='needs normalize=True'):
        HybridEncoder.from_pretrained(tiny_model, normalize=False)


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_agrees_with_sentence_transformers(tmp_path, pooling):
    from sentence_transformers import SentenceTransformer
    path = build_tiny_model(tmp_path / pooling, pooling=pooling)
    encoder = HybridEncoder.from_pretrained(path, batch_size=3)
    reference = SentenceTransformer(str(path), device='cpu')
    for prompt, ours in [('query', encoder.encode_queries(TINY_TEXTS)), ('passage', encoder.encode_docs(TINY_TEXTS))]:
        theirs = reference.encode(TINY_TEXTS, prompt_name=prompt)
        assert cosines(ours, theirs).min() >= 0.9999


def test_length_sorted_batches_equal_one_at_a_time(tiny_encoder):
    batched = tiny_encoder.encode(TINY_TEXTS, batch_size=4)
    single = np.stack([tiny_encoder.encode([t], batch_size=1)[0] for t in TINY_TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_pyterrier_modes(tiny_encoder):
    queries = pd.DataFrame({'qid': ['1', '2', '3'], 'query': [TINY_TEXTS[0], TINY_TEXTS[2], TINY_TEXTS[0]]})
    encoded = tiny_encoder(queries)
    assert list(encoded.columns) == ['qid', 'query', 'query_vec'] and encoded['query_vec'][0].shape == (32,)
    np.testing.assert_array_equal(encoded['query_vec'][0], encoded['query_vec'][2])
    docs = pd.DataFrame({'docno': ['a', 'b'], 'text': TINY_TEXTS[1:3], 'context': ['c1', 'c2']})
    assert 'doc_vec' in tiny_encoder(docs).columns
    on_context = tiny_encoder.doc_encoder()
    on_context.text_field = 'context'
    assert not np.allclose(on_context(docs)['doc_vec'][0], tiny_encoder(docs)['doc_vec'][0])
    pairs = pd.DataFrame({'qid': ['1', '1'], 'query': [TINY_TEXTS[0]] * 2, 'docno': ['a', 'b'],
                          'text': [TINY_TEXTS[1], TINY_TEXTS[7]]})
    scored = tiny_encoder.text_scorer()(pairs)
    expected = tiny_encoder.encode_docs(pairs['text']) @ tiny_encoder.encode_queries([TINY_TEXTS[0]])[0]
    np.testing.assert_allclose(scored['score'], expected, rtol=1e-5)
    assert set(scored['rank']) == {0, 1}


def test_empty_text_and_missing_columns_are_refused(tiny_encoder):
    with pytest.raises(ValueError, match=r"1 empty 'query' value\(s\) \(qid: q2\)"):
        tiny_encoder.query_encoder()(pd.DataFrame({'qid': ['q1', 'q2'], 'query': ['hello', '  ']}))
    with pytest.raises(ValueError, match=r"empty 'text' value\(s\) \(docno: d1\)"):
        tiny_encoder.doc_encoder()(pd.DataFrame({'docno': ['d1'], 'text': ['']}))
    with pytest.raises(pt.validate.InputValidationError):
        tiny_encoder(pd.DataFrame({'qid': ['q1'], 'title': ['no query column']}))
    empty = tiny_encoder.query_encoder()(pd.DataFrame({'qid': [], 'query': []}))
    assert 'query_vec' in empty.columns and len(empty) == 0


def test_int8_path_stays_close_to_fp32(tiny_model, tiny_encoder):
    quantized = HybridEncoder.from_pretrained(tiny_model, quantize=True)
    assert quantized.quantized and 'quantize=True' in repr(quantized)
    assert cosines(quantized.encode_docs(TINY_TEXTS), tiny_encoder.encode_docs(TINY_TEXTS)).min() > 0.95
    int8 = sorted(name for name, module in quantized.model.named_modules()
                  if isinstance(module, torch.ao.nn.quantized.dynamic.Linear))
    assert len(int8) == 8 and all('.attention.' in name for name in int8)  # 2 layers x (q, k, v, out); FFN fp32


def test_corrupt_checkpoint_is_named(tmp_path, tiny_model):
    import shutil
    broken = tmp_path / 'broken'
    shutil.copytree(tiny_model, broken)
    (broken / 'model.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(OSError, match='broken'):
        HybridEncoder.from_pretrained(broken)
    with pytest.raises(OSError, match='tokenizer'):
        HybridEncoder.from_pretrained(tmp_path / 'does-not-exist')
