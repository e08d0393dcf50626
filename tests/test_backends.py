"""ONNX Runtime and OpenVINO backends, their export cache, and the bias gate int8 exports must pass."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
from conftest import TINY_TEXTS

from pyterrier_hybrid import HybridEncoder
from pyterrier_hybrid.checkpoints import checkpoint_digest
from pyterrier_hybrid.retrieval import backends
from pyterrier_hybrid.retrieval.gate import BiasGate, QuantizationRefusedError

needs_onnx = pytest.mark.skipif(importlib.util.find_spec('onnxruntime') is None,
                                reason='the onnx extra is not installed (pip install "pyterrier-hybrid[onnx]")')
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec('openvino') is None or importlib.util.find_spec('nncf') is None,
    reason='the openvino extra is not installed (pip install "pyterrier-hybrid[openvino]")')

#: Small enough for seconds with the tiny model: 20 questions of 2 languages against 8 paragraphs' sentences.
SMALL_GATE = BiasGate(langs=('en', 'de'), questions_per_lang=10, paragraphs=8)


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    """A private copy of the tiny checkpoint, so every test starts without exports."""
    return shutil.copytree(tiny_model, tmp_path / 'tiny')


def _permute_embeddings(hf_model):
    """Word embeddings permuted, in place: vectors of other texts, as a broken quantisation gives."""
    import torch
    embeddings = hf_model.embeddings.word_embeddings.weight
    with torch.no_grad():
        embeddings.copy_(embeddings[torch.randperm(len(embeddings), generator=torch.Generator().manual_seed(0))])
    return hf_model


def _sabotaged(encoder: HybridEncoder) -> HybridEncoder:
    _permute_embeddings(encoder.model[0].auto_model)
    return encoder


def test_unknown_backend_is_named(checkpoint):
    with pytest.raises(ValueError, match="'tensorrt'.*torch, onnx, openvino"):
        HybridEncoder.from_pretrained(checkpoint, backend='tensorrt')


@pytest.mark.parametrize('backend, module', [('onnx', 'onnxruntime'), ('openvino', 'openvino')])
def test_missing_extra_names_the_pip_command(checkpoint, monkeypatch, backend, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as when the extra is not installed
    with pytest.raises(ImportError, match=rf'pip install "pyterrier-hybrid\[{backend}\]"'):
        HybridEncoder.from_pretrained(checkpoint, backend=backend)


def test_gate_accepts_identical_and_refuses_destroyed_vectors_with_its_figures(tiny_model):
    fp32 = SMALL_GATE.figures(HybridEncoder.from_pretrained(tiny_model, device='cpu'))
    SMALL_GATE.check(fp32, SMALL_GATE.figures(HybridEncoder.from_pretrained(tiny_model, device='cpu')))
    broken = SMALL_GATE.figures(_sabotaged(HybridEncoder.from_pretrained(tiny_model, device='cpu')))
    with pytest.raises(QuantizationRefusedError) as refused:
        SMALL_GATE.check(fp32, broken)
    message = str(refused.value)
    for figure in (fp32['AP'], broken['AP']):
        assert f'{figure:.4f}' in message
    for figure in (fp32['RankDistance'], broken['RankDistance']):
        assert f'{figure:.2f}' in message
    assert 'tolerance 0.005' in message and 'tolerance 2.0%' in message and '20 XQuAD-R questions' in message


def test_gate_sample_is_disjoint_from_calibration():
    """By paragraph (a few one-word sentences such as '[citation needed]' recur verbatim across paragraphs)."""
    gate = BiasGate(paragraphs=10 ** 6)
    calibration, sampled = set(gate._calibration_part()), {docno.split('-')[1] for docno in gate.sample.docnos}
    assert len(calibration) > 100 and len(sampled) > 100 and not calibration & sampled
    assert len(gate.calibration_texts(10 ** 6)) > len(gate.sample.docs)


@needs_onnx
def test_onnx_gives_torch_vectors_and_reuses_its_export(checkpoint, monkeypatch):
    reference = HybridEncoder.from_pretrained(checkpoint, device='cpu').encode_docs(TINY_TEXTS)
    encoder = HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx')
    np.testing.assert_allclose(encoder.encode_docs(TINY_TEXTS), reference, atol=1e-5)
    assert (checkpoint / 'onnx' / 'model.onnx').is_file() and 'onnx' in repr(encoder)
    monkeypatch.setattr(backends, 'export_onnx', lambda *a: pytest.fail('exported again'))
    again = HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx')
    np.testing.assert_array_equal(again.encode_docs(TINY_TEXTS), encoder.encode_docs(TINY_TEXTS))


@needs_onnx
def test_an_export_of_other_weights_is_made_again(checkpoint):
    """A checkpoint trained again into the same folder keeps its old onnx/ folder: the export must not outlive
    the weights it was made from."""
    from safetensors.torch import load_file, save_file
    HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx')
    weights = load_file(checkpoint / 'model.safetensors')
    weights['embeddings.word_embeddings.weight'] = weights['embeddings.word_embeddings.weight'].flip(0)
    save_file(weights, checkpoint / 'model.safetensors', metadata={'format': 'pt'})
    reference = HybridEncoder.from_pretrained(checkpoint, device='cpu').encode_docs(TINY_TEXTS)
    again = HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx')
    np.testing.assert_allclose(again.encode_docs(TINY_TEXTS), reference, atol=1e-5)


def test_a_hub_id_is_known_by_the_commit_its_cached_snapshot_resolves_to(tmp_path, monkeypatch):
    """Exports (and experiment keys) of a Hub model updated upstream are not reused: they follow the commit."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / 'cache'))
    repo = tmp_path / 'hub' / 'models--org--encoder'
    seen = [(checkpoint_digest('org/encoder'), backends.export_dir('org/encoder', 'onnx'))]  # nothing cached yet
    for commit in ('a' * 40, 'b' * 40):
        (repo / 'snapshots' / commit).mkdir(parents=True)
        (repo / 'snapshots' / commit / 'config.json').write_text('{}')
        (repo / 'refs').mkdir(exist_ok=True)
        (repo / 'refs' / 'main').write_text(commit)
        seen.append((checkpoint_digest('org/encoder'), backends.export_dir('org/encoder', 'onnx')))
    assert len(set(seen)) == 3 and len({directory for _, directory in seen}) == 3
    assert checkpoint_digest('org/encoder') == seen[-1][0]  # stable while the commit is
    assert checkpoint_digest('/no/such/checkpoint') != checkpoint_digest('/no/such/other')  # no Hub id: by name


def test_torch_int8_is_gated_like_the_exports(checkpoint, monkeypatch):
    identity = checkpoint_digest(checkpoint)
    encoder = HybridEncoder.from_pretrained(checkpoint, device='cpu', quantize=True, gate=SMALL_GATE)
    assert encoder.quantized
    verdict = checkpoint / 'torch' / 'model_qint8.gate.json'
    assert json.loads(verdict.read_text())['checkpoint'] == identity == checkpoint_digest(checkpoint)
    verdict.unlink()
    monkeypatch.setattr(backends, 'quantize_torch', _permute_embeddings)  # a quantisation that ranks otherwise
    with pytest.raises(QuantizationRefusedError, match=r'Mul AP fp32 0\.\d{4}, int8 0\.\d{4}'):
        HybridEncoder.from_pretrained(checkpoint, device='cpu', quantize=True, gate=SMALL_GATE)
    monkeypatch.setattr(SMALL_GATE.__class__, 'figures', lambda *a: pytest.fail('measured again'))
    with pytest.raises(QuantizationRefusedError):  # the refusal was stored with its figures
        HybridEncoder.from_pretrained(checkpoint, device='cpu', quantize=True, gate=SMALL_GATE)


@needs_onnx
def test_read_only_checkpoint_exports_to_the_cache(checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / 'cache'))
    monkeypatch.setattr(backends.os, 'access', lambda path, mode: False)  # root may write anywhere: pretend not
    HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx')
    assert not (checkpoint / 'onnx').exists()
    assert len(list((tmp_path / 'cache' / 'exports').glob('*/onnx/model.onnx'))) == 1


@needs_onnx
def test_onnx_int8_is_gated_once_and_a_corrupted_scale_is_refused(checkpoint, monkeypatch):
    import onnx
    from onnx import numpy_helper
    reference = HybridEncoder.from_pretrained(checkpoint, device='cpu').encode_docs(TINY_TEXTS)
    encoder = HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx', quantize=True, gate=SMALL_GATE)
    cosine = (encoder.encode_docs(TINY_TEXTS) * reference).sum(1)
    assert cosine.min() > 0.99
    int8 = checkpoint / 'onnx' / 'model_qint8.onnx'
    assert (checkpoint / 'onnx' / 'model_qint8.onnx.gate.json').is_file()
    monkeypatch.setattr(SMALL_GATE.__class__, 'figures', lambda *a: pytest.fail('measured again'))
    HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx', quantize=True, gate=SMALL_GATE)
    monkeypatch.undo()

    graph = onnx.load(str(int8))
    for tensor in graph.graph.initializer:  # every weight scale 100 times too large or too small, at random
        if tensor.name.endswith('_scale'):
            scale = numpy_helper.to_array(tensor)
            factor = np.random.default_rng(len(tensor.name)).choice([0.01, 100.0], size=scale.shape)
            tensor.CopyFrom(numpy_helper.from_array((scale * factor).astype(scale.dtype), tensor.name))
    onnx.save(graph, str(int8))
    (checkpoint / 'onnx' / 'model_qint8.onnx.gate.json').unlink()
    with pytest.raises(QuantizationRefusedError, match=r'Mul AP fp32 0\.\d{4}, int8 0\.\d{4}.*rank distance fp32'):
        HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='onnx', quantize=True, gate=SMALL_GATE)


@needs_openvino
def test_openvino_fp32_and_static_int8_calibrated_on_the_corpus(checkpoint):
    reference = HybridEncoder.from_pretrained(checkpoint, device='cpu').encode_docs(TINY_TEXTS)
    encoder = HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='openvino')
    np.testing.assert_allclose(encoder.encode_docs(TINY_TEXTS), reference, atol=1e-5)
    calibration = SMALL_GATE.calibration_texts(16)
    int8 = HybridEncoder.from_pretrained(checkpoint, device='cpu', backend='openvino', quantize=True,
                                         calibration=calibration, gate=SMALL_GATE)
    assert (int8.encode_docs(TINY_TEXTS) * reference).sum(1).min() > 0.99
    assert len(list((checkpoint / 'openvino').glob('openvino_model_qint8_*.xml.gate.json'))) == 1
