"""HybridEncoder on tiny models built in the test: config, PyTerrier modes, bad input, loading safely.
Agreement with sentence-transformers over every kind of checkpoint is tests/test_encoder_matrix.py."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch
from conftest import TINY_TEXTS, build_tiny_model

from pyterrier_hybrid import EncoderConfig, HybridEncoder
from pyterrier_hybrid.retrieval.gate import BiasGate


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_reads_the_checkpoint_config(tiny_encoder, tiny_model):
    assert tiny_encoder.encoder_config == EncoderConfig(
        modules=('Transformer', 'Pooling', 'Normalize'), pooling='mean', normalize=True, query_prefix='query: ',
        doc_prefix='passage: ', max_length=48, similarity='cosine')
    assert tiny_encoder.index_metadata()['encoder_config']['modules'] == ('Transformer', 'Pooling', 'Normalize')
    overridden = HybridEncoder.from_pretrained(tiny_model, query_prefix='', max_length=16)
    assert overridden.encoder_config.query_prefix == '' and overridden.encoder_config.doc_prefix == 'passage: '
    assert overridden.max_length == 16 and overridden.model.max_seq_length == 16
    long = ' '.join(TINY_TEXTS)
    np.testing.assert_allclose(overridden.encode_queries([long]), overridden.encode_queries([long + ' more words']),
                               atol=1e-6)  # both truncated to the same 16 tokens
    with pytest.raises(ValueError, match='needs normalize=True'):
        HybridEncoder.from_pretrained(tiny_model, normalize=False)
    with pytest.raises(TypeError, match='pooling'):  # pooling is the checkpoint's Pooling module, not a keyword
        HybridEncoder.from_pretrained(tiny_model, pooling='cls')


def test_length_sorted_batches_equal_one_at_a_time(tiny_encoder):
    batched = tiny_encoder.encode(TINY_TEXTS, batch_size=4)
    single = np.stack([tiny_encoder.encode([t], batch_size=1)[0] for t in TINY_TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_query_vectors_with_gradients_are_the_query_vectors(tiny_encoder):
    with_gradients = tiny_encoder.encode_queries_torch(TINY_TEXTS[:3])
    assert with_gradients.requires_grad
    np.testing.assert_allclose(with_gradients.detach().numpy(), tiny_encoder.encode_queries(TINY_TEXTS[:3]), atol=1e-5)


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


def test_invisible_non_string_and_invalid_unicode_texts_are_refused(tiny_encoder):
    def queries(*texts):
        return pd.DataFrame({'qid': [f'q{i}' for i in range(len(texts))], 'query': list(texts)})

    encode_queries, encode_docs = tiny_encoder.query_encoder(), tiny_encoder.doc_encoder()
    # zero-width space, zero-width joiner, BOM: nothing visible, so as empty as ''
    with pytest.raises(ValueError, match=r"2 empty 'query' value\(s\) \(qid: q1, q2\)"):
        encode_queries(queries('hello', '\u200b\u200d\ufeff', ' \u2060 '))
    with pytest.raises(ValueError, match=r"1 empty 'query' value\(s\) \(qid: q1\)"):
        encode_queries(queries('hello', None))
    with pytest.raises(TypeError, match=r"1 non-string 'query' value\(s\) \(found int\) \(qid: q1\)"):
        encode_queries(queries('hello', 5))
    with pytest.raises(ValueError, match=r"1 'text' value\(s\) with a lone surrogate.*\(docno: d2\)"):
        # object dtype: pandas' default (Arrow) strings refuse a lone surrogate, Python strings hold it
        encode_docs(pd.DataFrame({'docno': ['d1', 'd2'], 'text': ['fine', 'broken \ud800 text']}, dtype=object))
    with pytest.raises(TypeError, match=r"1 non-string docno value\(s\) \(row 1: 7 \(int\)\)"):
        encode_docs(pd.DataFrame({'docno': ['d1', 7], 'text': ['one', 'two']}))
    with pytest.raises(pt.validate.InputValidationError, match='docno'):
        encode_docs(pd.DataFrame({'text': ['no docno column']}))
    with pytest.raises(pt.validate.InputValidationError, match='text'):
        encode_docs(pd.DataFrame({'docno': ['d1'], 'body': ['no text column']}))
    visible = encode_queries(queries('\u200bhello', 'Wie viele Punkte?'))  # invisible characters among visible ones
    assert np.isfinite(np.stack(visible['query_vec'])).all()


def test_int8_path_stays_close_to_fp32(tiny_model, tiny_encoder, tmp_path):
    gate = BiasGate(langs=('en', 'de'), questions_per_lang=10, paragraphs=8)  # seconds; its verdict in the copy
    quantized = HybridEncoder.from_pretrained(shutil.copytree(tiny_model, tmp_path / 'tiny'), quantize=True, gate=gate)
    assert quantized.quantized and 'quantize=True' in repr(quantized)
    assert cosines(quantized.encode_docs(TINY_TEXTS), tiny_encoder.encode_docs(TINY_TEXTS)).min() > 0.95
    int8 = sorted(name for name, module in quantized.model.named_modules()
                  if isinstance(module, torch.ao.nn.quantized.dynamic.Linear))
    assert len(int8) == 8 and all('.attention.' in name for name in int8)  # 2 layers x (q, k, v, out); FFN fp32


def test_corrupt_checkpoints_are_named(tmp_path, tiny_model):
    broken = tmp_path / 'broken'
    shutil.copytree(tiny_model, broken)
    (broken / 'model.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(OSError, match='broken'):
        HybridEncoder.from_pretrained(broken)
    with pytest.raises(OSError, match='does-not-exist'):
        HybridEncoder.from_pretrained(tmp_path / 'does-not-exist')
    for name in ('sentence_bert_config.json', 'modules.json'):
        corrupt = tmp_path / f'corrupt-{name}'
        shutil.copytree(tiny_model, corrupt)
        (corrupt / name).write_text('{"max_seq_length": 48')
        with pytest.raises(OSError, match=rf'{corrupt / name} is not valid JSON'):
            HybridEncoder.from_pretrained(corrupt)


def shipping_code(path, marker):
    """The tiny checkpoint with a custom model class whose module, when imported, writes ``marker``; its own
    sentence-transformers config asks for trust_remote_code."""
    (path / 'modeling_marker.py').write_text(
        f'import pathlib\npathlib.Path({str(marker)!r}).write_text("imported")\n'
        'from transformers import BertModel\n\n\nclass MarkerModel(BertModel):\n    pass\n')
    config = json.loads((path / 'config.json').read_text())
    (path / 'config.json').write_text(json.dumps({**config, 'auto_map': {'AutoModel': 'modeling_marker.MarkerModel'}}))
    asks = {'trust_remote_code': True}
    (path / 'sentence_bert_config.json').write_text(json.dumps({
        'max_seq_length': 48, 'model_args': asks, 'config_args': asks, 'tokenizer_args': asks}))
    return path


def test_checkpoint_code_runs_only_when_the_caller_trusts_it(tmp_path, tiny_model):
    import transformers
    # no '-' in the name: transformers copies the code to a module named after it, with '-' spelled '_hyphen_'
    checkpoint = shipping_code(shutil.copytree(tiny_model, tmp_path / 'ships_code'), tmp_path / 'marker')
    try:
        standard = HybridEncoder.from_pretrained(checkpoint)  # the config's own trust_remote_code is ignored
        assert not (tmp_path / 'marker').exists()
        assert type(standard.model.transformers_model) is transformers.BertModel
        trusted = HybridEncoder.from_pretrained(checkpoint, trust_remote_code=True)
        assert (tmp_path / 'marker').exists()  # the checkpoint's code is real: the flag alone ran it
        assert type(trusted.model.transformers_model).__name__ == 'MarkerModel'
        assert 'trust_remote_code=True' in repr(trusted)
    finally:
        shutil.rmtree(f'{transformers.utils.HF_MODULES_CACHE}/transformers_modules/{checkpoint.name}',
                      ignore_errors=True)
    modules = json.loads((tiny_model / 'modules.json').read_text())
    modules[1]['type'] = 'modeling_marker.MarkerPooling'  # a custom module, not a transformers class
    (checkpoint / 'modules.json').write_text(json.dumps(modules))
    (tmp_path / 'marker').unlink()
    with pytest.raises(OSError, match='trust_remote_code=True'):
        HybridEncoder.from_pretrained(checkpoint)
    assert not (tmp_path / 'marker').exists()


def transformers_warnings(load) -> list[str]:
    """What transformers logs while ``load()`` runs (its logger does not propagate, so caplog misses it)."""
    records, handler = [], logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger('transformers')
    logger.addHandler(handler)
    try:
        load()
    finally:
        logger.removeHandler(handler)
    return [record.getMessage() for record in records]


def test_a_checkpoint_saved_without_its_pooler_loads_without_a_load_report(tmp_path):
    """mE5 has no pooler and SentenceTransformer.save forgets the model_args saying so (#17)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    base = build_tiny_model(tmp_path / 'base', sentence_transformers_files=False)
    transformer = Transformer(str(base), model_kwargs={'add_pooling_layer': False})
    SentenceTransformer(modules=[transformer, Pooling(32), Normalize()]).save(str(tmp_path / 'no-pooler'))
    reference = SentenceTransformer(str(tmp_path / 'no-pooler'), device='cpu')
    assert any('LOAD REPORT' in w and 'pooler.dense.weight' in w  # sentence-transformers itself reports it
               for w in transformers_warnings(lambda: SentenceTransformer(str(tmp_path / 'no-pooler'))))
    encoders = []
    assert not any('LOAD REPORT' in w for w in transformers_warnings(
        lambda: encoders.append(HybridEncoder.from_pretrained(tmp_path / 'no-pooler'))))
    encoder = encoders[0]
    assert encoder.model.transformers_model.pooler is None
    assert cosines(encoder.encode_docs(TINY_TEXTS), reference.encode(TINY_TEXTS)).min() >= 0.99999
