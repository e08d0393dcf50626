"""ONNX Runtime and OpenVINO backends for :class:`~pyterrier_hybrid.HybridEncoder`, fp32 and int8.

Only the checkpoint's Transformer runs in the backend: it is exported from the very module sentence-transformers
loaded, and every module after it (pooling, Dense heads, Normalize) and everything before it (prompts, truncation)
stays sentence-transformers' own, so a backend changes the arithmetic, never the recipe. sentence-transformers'
own backends go through Optimum, whose releases pin ``transformers < 5.6``: with this package's transformers they
do not install, so the export here uses ``torch.onnx`` (TorchScript exporter), ONNX Runtime's dynamic
quantisation, OpenVINO's converter and NNCF's static quantisation directly.

Exports are cached beside the checkpoint (its ``onnx/`` or ``openvino/`` folder, as sentence-transformers does), or
for a checkpoint that is not a writable directory (a Hub id, a read-only folder) under
``~/.cache/pyterrier-hybrid/exports/<checkpoint digest>/``, and reused on the next load only while they were made
from the checkpoint's current files (:func:`~pyterrier_hybrid.checkpoints.checkpoint_digest`, stamped beside each
export): a checkpoint trained again into the same folder, or a Hub model updated upstream, is exported again.

Every int8 model, torch's dynamic quantisation included, is used only once
:class:`~pyterrier_hybrid.retrieval.gate.BiasGate` accepted it; its figures are stored beside the export (for
torch, which exports nothing, in the checkpoint's ``torch/`` folder) with the checkpoint digest they were measured on.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.checkpoints import checkpoint_digest
from pyterrier_hybrid.retrieval import BACKENDS

_EXTRAS = {'onnx': ('onnxruntime', 'onnx'), 'openvino': ('openvino', 'nncf')}
_FILES = {('onnx', False): 'model.onnx', ('onnx', True): 'model_qint8.onnx',
          ('openvino', False): 'openvino_model.xml', ('openvino', True): 'openvino_model_qint8.xml',
          ('torch', True): 'model_qint8'}  # torch: no file, the name its gate verdict is kept under
CACHE_ENV = 'PYTERRIER_HYBRID_CACHE'


def check_backend(backend: str) -> None:
    """Refuse an unknown backend, or one whose extra is not installed, naming the pip command."""
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
    for module in _EXTRAS.get(backend, ()):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(f'backend={backend!r} needs {module}, which is not installed: '
                              f'pip install "pyterrier-hybrid[{backend}]"') from error


def export_dir(name_or_path: str, backend: str) -> Path:
    """Where the exports of a checkpoint live: its own ``onnx/`` or ``openvino/`` folder when it is a writable local
    directory, otherwise a cache folder named by the checkpoint's digest."""
    local = Path(name_or_path)
    if local.is_dir() and os.access(local, os.W_OK):
        return local / backend
    root = Path(os.environ.get(CACHE_ENV, Path.home() / '.cache' / 'pyterrier-hybrid'))
    return root / 'exports' / checkpoint_digest(name_or_path)[:16] / backend


def export_path(name_or_path: str, backend: str, int8: bool, calibration: Sequence[str] | None = None) -> Path:
    """The export's file; a static int8 one is named by a digest of its calibration texts too."""
    path = export_dir(name_or_path, backend) / _FILES[backend, int8]
    if not calibration:
        return path
    digest = hashlib.sha256('\0'.join(calibration).encode()).hexdigest()[:12]
    return path.with_name(f'{path.stem}_{digest}{path.suffix}')


class _ExportedTransformer(torch.nn.Module):
    """Stands in for the Hugging Face model inside sentence-transformers' Transformer module: takes its features,
    returns ``last_hidden_state`` computed by an ONNX Runtime or OpenVINO graph."""

    def __init__(self, path: Path, config, input_names: Sequence[str]):
        super().__init__()
        self.path, self.config, self.input_names = path, config, tuple(input_names)

    def forward(self, **features) -> dict[str, torch.Tensor]:
        inputs = {name: features[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        return {'last_hidden_state': torch.from_numpy(np.ascontiguousarray(self.run(inputs), dtype=np.float32))}

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return str(self.path)


class OnnxTransformer(_ExportedTransformer):
    def __init__(self, path: Path, config):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the thread budget torch was given
        self.session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        super().__init__(path, config, [i.name for i in self.session.get_inputs()])

    def run(self, inputs):
        return self.session.run(None, inputs)[0]


class OpenVinoTransformer(_ExportedTransformer):
    def __init__(self, path: Path, config):
        import openvino as ov
        self.compiled = ov.Core().compile_model(str(path), 'CPU', {'INFERENCE_NUM_THREADS': torch.get_num_threads(),
                                                                   'INFERENCE_PRECISION_HINT': 'f32'})
        super().__init__(path, config, [next(iter(i.get_names())) for i in self.compiled.inputs])

    def run(self, inputs):
        return self.compiled(inputs)[0]


_RUNTIMES = {'onnx': OnnxTransformer, 'openvino': OpenVinoTransformer}


def _input_names(model) -> list[str]:
    """The tokenizer outputs the Transformer passes to the Hugging Face model (``token_type_ids`` only if used)."""
    features = model.preprocess(['an example', 'a longer example sentence'])
    accepted = model[0].model_forward_params
    return [k for k in ('input_ids', 'attention_mask', 'token_type_ids') if k in features
            and (accepted is None or k in accepted)]


def export_onnx(model, target: Path) -> None:
    """The Transformer of a loaded ``SentenceTransformer`` as an fp32 ONNX graph with dynamic batch and length."""
    names = _input_names(model)
    features = model.preprocess(['an example', 'a longer example sentence'])
    hf_model = model[0].model.eval()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = hf_model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs)), return_dict=True)['last_hidden_state']

    axes = {name: {0: 'batch', 1: 'tokens'} for name in [*names, 'last_hidden_state']}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(Wrapped().eval(), tuple(features[k] for k in names), str(tmp), dynamo=False,
                              input_names=names, output_names=['last_hidden_state'], dynamic_axes=axes,
                              opset_version=17)
    write_atomically(target, write)
    hf_model.eval()  # the exporter restores the wrapper's training flag onto the model


def quantize_onnx(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic int8 (weights per channel, activations per tensor at run time) of the MatMuls."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    write_atomically(target, lambda tmp: quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8,
                                                          per_channel=True, op_types_to_quantize=['MatMul']))


def convert_openvino(source_onnx: Path, target: Path) -> None:
    import openvino as ov
    ov_model = ov.convert_model(str(source_onnx))
    _save_openvino(ov_model, target)


def quantize_openvino(source: Path, target: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """NNCF static int8 (activation ranges measured on ``calibration``) of an OpenVINO model."""
    import nncf
    import openvino as ov
    ov_model = ov.Core().read_model(str(source))
    quantized = nncf.quantize(ov_model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))
    _save_openvino(quantized, target)


def _save_openvino(ov_model, target: Path) -> None:
    """The .xml and its .bin, each written atomically (the .bin first: an .xml is only ever seen complete)."""
    import openvino as ov
    staging = target.with_name(f'.staging-{os.getpid()}-{target.name}')
    ov.save_model(ov_model, str(staging), compress_to_fp16=False)
    try:
        for suffix in ('.bin', '.xml'):
            write_atomically(target.with_suffix(suffix),
                             lambda tmp, s=suffix: os.replace(staging.with_suffix(s), tmp))
    finally:
        for suffix in ('.bin', '.xml'):
            staging.with_suffix(suffix).unlink(missing_ok=True)


def calibration_features(model, texts: Sequence[str], prefix: str = '') -> list[dict[str, np.ndarray]]:
    """Tokenized calibration texts, one per item, as the backend's graph receives them."""
    names = _input_names(model)
    items = []
    for text in texts:
        features = model.preprocess([text], prompt=prefix or None)
        items.append({name: features[name].numpy().astype(np.int64) for name in names})
    return items


def ensure_export(model, name_or_path: str, backend: str, int8: bool,
                  calibration: Sequence[str] | None = None, prefix: str = '') -> Path:
    """The path of the exported graph, exporting it (and the fp32 graph it derives from) when it is missing or
    was made from other checkpoint files."""
    target = export_path(name_or_path, backend, int8, calibration if int8 and backend == 'openvino' else None)
    checkpoint = checkpoint_digest(name_or_path)
    stamp = target.with_name(f'{target.name}.checkpoint')
    if target.is_file() and _read_text(stamp) == checkpoint:
        return target
    if backend == 'onnx' and not int8:
        export_onnx(model, target)
    elif backend == 'onnx':
        quantize_onnx(ensure_export(model, name_or_path, 'onnx', False), target)
    elif int8:
        if not calibration:
            raise ValueError('backend="openvino" with quantize=True is static quantisation: pass calibration texts '
                             '(a sample of the target corpus)')
        quantize_openvino(ensure_export(model, name_or_path, backend, False), target,
                          calibration_features(model, calibration, prefix))
    else:
        convert_openvino(ensure_export(model, name_or_path, 'onnx', False), target)
    write_atomically(stamp, lambda tmp: tmp.write_text(checkpoint, encoding='utf-8'))
    return target


def use_exported(model, path: Path, backend: str) -> None:
    """Run ``model``'s Transformer in the backend from now on (its torch weights are released)."""
    model[0].model = _RUNTIMES[backend](path, model[0].model.config)


def load_backend(encoder, calibration: Sequence[str] | None = None, gate=None) -> None:
    """Move a freshly loaded fp32 torch ``encoder`` to its ``backend``, int8 when ``encoder.quantized``.

    An int8 model is measured against the torch fp32 model by ``gate`` the first time (the figures are stored
    beside it with the checkpoint digest, accepted or not, so later loads of the same checkpoint only re-apply the
    tolerances) and refused with :class:`QuantizationRefusedError` when it ranks differently."""
    from .gate import BiasGate
    model, name, backend = encoder.model, encoder.model_name, encoder.backend
    if not encoder.quantized:
        use_exported(model, ensure_export(model, name, backend, False), backend)
        return
    gate = gate or BiasGate()
    if backend == 'torch':
        path = export_dir(name, backend) / _FILES[backend, True]
        to_int8 = lambda: quantize_torch(model.transformers_model)  # noqa: E731
    else:
        if backend == 'openvino' and calibration is None:
            calibration = gate.calibration_texts()
        path = ensure_export(model, name, backend, True, calibration, encoder.encoder_config.doc_prefix)
        to_int8 = lambda: use_exported(model, path, backend)  # noqa: E731
    verdict = path.with_name(f'{path.name}.gate.json')
    record, checkpoint = _read_json(verdict), checkpoint_digest(name)
    if record is None or record['sample'] != gate.record({}, {})['sample'] or record.get('checkpoint') != checkpoint:
        fp32 = gate.figures(encoder)
        to_int8()
        record = {**gate.record(fp32, gate.figures(encoder)), 'checkpoint': checkpoint}
        write_atomically(verdict, lambda tmp: tmp.write_text(json.dumps(record, indent=1), encoding='utf-8'))
        gate.check(record['fp32'], record['int8'])  # a refusal is remembered too: the next load refuses at once
    else:
        gate.check(record['fp32'], record['int8'])
        to_int8()


def quantize_torch(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation, in place, of the attention projections (query, key, value, output), per output
    channel.

    The feed-forward layers stay fp32: dynamic quantisation scales each activation tensor as a whole, and the
    feed-forward inputs carry outlier channels that such scales crush. On multilingual-e5-small, quantising every
    linear layer per tensor cost 0.091 XQuAD-R Mul AP, all but the feed-forward outputs per channel 0.023, the
    attention projections alone 0.006 (benchmarks/results/encode_speed.md, lareqa_xquad-r_mE5-small-int8.*)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    layers = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and '.attention.' in f'.{name}.'}
    return quantize_dynamic(model, layers, dtype=torch.qint8, inplace=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (FileNotFoundError, ValueError):
        return None  # absent or half-readable: measure again


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding='utf-8')
    except FileNotFoundError:
        return None
