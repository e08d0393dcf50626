"""The GPU paths: half-precision encoding, fp16 translation and training on CUDA (skipped without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_TEXTS
from tiny_marian import build_tiny_marian

import pyterrier_hybrid as ph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def test_encoder_runs_in_half_precision_on_the_gpu_and_agrees_with_the_cpu(tiny_model):
    gpu = ph.HybridEncoder.from_pretrained(tiny_model, batch_size=4)
    cpu = ph.HybridEncoder.from_pretrained(tiny_model, batch_size=4, device='cpu')
    assert next(gpu.model.parameters()).dtype in (torch.bfloat16, torch.float16)
    on_gpu, on_cpu = gpu.encode_docs(TINY_TEXTS), cpu.encode_docs(TINY_TEXTS)
    assert on_gpu.dtype == np.float32 and on_gpu.shape == on_cpu.shape
    cosines = (on_gpu * on_cpu).sum(axis=1)
    assert cosines.min() >= 0.99, cosines


def test_translator_runs_in_fp16_on_the_gpu(tmp_path):
    model = build_tiny_marian(tmp_path / 'opus-mt-en-de', TINY_TEXTS)
    gpu = ph.Seq2SeqTranslator(model, batch_size=4, max_length=32)
    cpu = ph.Seq2SeqTranslator(model, batch_size=4, max_length=32, device='cpu')
    texts = [*TINY_TEXTS, '']
    on_gpu, on_cpu = gpu(texts, 'en', 'de'), cpu(texts, 'en', 'de')
    _, _, loaded = gpu._load('en', 'de')
    assert gpu.device == 'cuda' and next(loaded.parameters()).dtype == torch.float16
    assert on_gpu[-1] == '' and all(on_gpu[:-1]) and gpu.generate_calls == 3
    same = sum(g == c for g, c in zip(on_gpu, on_cpu)) / len(texts)
    assert same >= 0.5, list(zip(on_gpu, on_cpu))  # fp16 may flip a near-tie, not most outputs


def test_training_on_the_gpu_changes_the_weights_and_loads_back(tiny_model, tmp_path):
    versions = {'en': TINY_TEXTS[0:2], 'de': TINY_TEXTS[2:4]}  # one QA pair and its German translation
    items = [ph.ParallelItem(f'item-{i}', lang, f'{query} {i}', f'{answer} {i}')
             for i in range(8) for lang, (query, answer) in versions.items()]
    out = ph.train(tiny_model, {'tiny': items}, tmp_path / 'gpu', steps=3, batch_size=4, strategy='xx-mono')
    from safetensors.torch import load_file
    before, after = load_file(str(tiny_model / 'model.safetensors')), load_file(str(out / 'model.safetensors'))
    assert any(not torch.equal(before[k], after[k]) for k in before), 'training changed nothing'
    vectors = ph.HybridEncoder.from_pretrained(out).encode_queries(['Who led the team in interceptions?'])
    assert np.isfinite(vectors).all() and abs(float(np.linalg.norm(vectors)) - 1) < 1e-3
