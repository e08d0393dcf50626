"""Bi-encoders as PyTerrier transformers: any sentence-transformers or Hugging Face checkpoint, fast on CPU and GPU.

:class:`HybridEncoder` is a :class:`pyterrier_dr.BiEncoder`, so ``encoder >> index``, ``encoder.text_scorer()``
and pyterrier-dr's indexes and retrievers all work with it. It is backed by
:class:`sentence_transformers.SentenceTransformer`, so every module of a checkpoint runs (any pooling, Dense heads,
Normalize, custom modules) and a checkpoint gives the vectors here that it gave in training. Around
``SentenceTransformer.encode`` it adds what makes encoding fast: batches of similar *token* length, bf16/fp16 on a
GPU and int8 attention on CPU.
"""
from __future__ import annotations

import inspect
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_dr
import torch
from pyterrier_dr.biencoder import BiDocEncoder, BiQueryEncoder

if TYPE_CHECKING:
    from .gate import BiasGate


@dataclass(frozen=True)
class EncoderConfig:
    """What a loaded checkpoint does to a text, as an index records it: its modules, prompts and similarity."""
    modules: tuple[str, ...]  # the sentence-transformers modules in order, e.g. ('Transformer', 'Pooling', 'Dense')
    pooling: str  # the Pooling module's mode ('mean', 'cls', 'max', 'weightedmean', 'lasttoken', 'mean+max'...)
    normalize: bool  # unit vectors, so that an inner-product index serves cosine similarity
    query_prefix: str
    doc_prefix: str
    max_length: int | None  # tokens kept (prompt included); longer texts are truncated
    similarity: str  # 'cosine' or 'dot'; stored with an index and checked against it

    def __post_init__(self):
        if self.similarity not in ('cosine', 'dot'):
            raise ValueError(f"similarity must be 'cosine' or 'dot', not {self.similarity!r}")
        if self.similarity == 'cosine' and not self.normalize:
            raise ValueError('cosine similarity is served as inner product over unit vectors: it needs normalize=True')

    @classmethod
    def of(cls, model) -> EncoderConfig:
        """The config of a loaded ``SentenceTransformer``: its prompts 'query' and 'passage' (or 'document')."""
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
        pooling = next((m.pooling_mode for m in model if isinstance(m, Pooling)), '')
        similarity = 'dot' if model.similarity_fn_name == 'dot' else 'cosine'
        prompts = model.prompts or {}
        return cls(modules=tuple(type(m).__name__ for m in model),
                   pooling=pooling if isinstance(pooling, str) else '+'.join(pooling),
                   normalize=similarity == 'cosine' or any(isinstance(m, Normalize) for m in model),
                   query_prefix=prompts.get('query', ''),
                   doc_prefix=prompts.get('passage') or prompts.get('document', ''),
                   max_length=model.max_seq_length, similarity=similarity)


def _text_problem(text: Any) -> str | None:
    """Why a text cannot be encoded faithfully, or None (cheap: the visibility scan stops at the first visible one)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return 'empty'
    if not isinstance(text, str):
        return 'non-string'
    if not any(not c.isspace() and unicodedata.category(c) != 'Cf' for c in text):
        return 'empty'  # whitespace or format characters only (zero-width space / joiner, BOM...)
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return 'lone-surrogate'
    return None


_TEXT_PROBLEMS = {  # problem -> (exception, what the message says)
    'non-string': (TypeError, 'non-string {field!r} value(s) (found {types})'),
    'lone-surrogate': (ValueError, '{field!r} value(s) with a lone surrogate, not valid Unicode'),
    'empty': (ValueError, 'empty {field!r} value(s)'),
}


def _check_texts(inp: pd.DataFrame, text_field: str, id_field: str) -> None:
    """Refuse texts that would encode to something meaningless without a word: empty ones (whitespace or invisible
    format characters only encode to the prompt alone, which matches everything equally), non-strings (5 would be
    encoded as '5') and lone surrogates (not text; the tokenizer fails on them obscurely)."""
    problems = inp[text_field].map(_text_problem)
    for problem, (error, description) in _TEXT_PROBLEMS.items():
        bad = (problems == problem).to_numpy()
        if bad.any():
            ids = (inp[id_field] if id_field in inp.columns else inp.index.to_series()).astype(str)[bad].tolist()
            types = ', '.join(sorted({type(t).__name__ for t in inp[text_field][bad]}))
            shown = ', '.join(ids[:5]) + (' ...' if len(ids) > 5 else '')
            raise error(f'{int(bad.sum())} {description.format(field=text_field, types=types)} ({id_field}: {shown}); '
                        'drop or fix them before encoding')


def _check_docnos(inp: pd.DataFrame) -> None:
    """An index stores docnos as strings: a number would be stored as another docno than the qrels name."""
    bad = ~inp['docno'].map(lambda docno: isinstance(docno, str)).to_numpy()
    if bad.any():
        rows = ', '.join(f'row {i}: {d!r} ({type(d).__name__})' for i, d in zip(np.flatnonzero(bad)[:5],
                                                                              inp['docno'][bad]))
        raise TypeError(f'{int(bad.sum())} non-string docno value(s) ({rows}); docnos must be strings')


class HybridQueryEncoder(BiQueryEncoder):
    """Adds ``query_vec`` (each distinct query encoded once); refuses empty queries."""

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=['query'])
        _check_texts(inp, 'query', 'qid')
        unique, inverse = np.unique(inp['query'].to_numpy(dtype=str), return_inverse=True)
        model = self.bi_encoder_model
        vectors = model.encode(list(unique), model.encoder_config.query_prefix, self.batch_size, self.verbose)
        return inp.assign(query_vec=list(vectors[inverse]))


class HybridDocEncoder(BiDocEncoder):
    """Adds ``doc_vec``; refuses empty documents and non-string docnos."""

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=['docno', self.text_field])
        _check_docnos(inp)
        _check_texts(inp, self.text_field, 'docno')
        model = self.bi_encoder_model
        vectors = model.encode(inp[self.text_field].tolist(), model.encoder_config.doc_prefix, self.batch_size,
                               self.verbose)
        return inp.assign(doc_vec=list(vectors))


class HybridEncoder(pyterrier_dr.BiEncoder):
    """A multilingual (or monolingual) bi-encoder: query encoder, document encoder and text scorer in one.

    .. code-block:: python

        encoder = HybridEncoder.from_pretrained('intfloat/multilingual-e5-small')  # or a local path
        index = pyterrier_hybrid.DenseIndex('xquad.index')
        (encoder >> index).index(dataset.get_corpus_iter())
        retriever = encoder >> index.retriever()
    """

    def __init__(self, model: torch.nn.Module, config: EncoderConfig, *, model_name: str = '',
                 batch_size: int = 32, text_field: str = 'text', verbose: bool = False,
                 device: torch.device | None = None, quantized: bool = False, trust_remote_code: bool = False,
                 backend: str = 'torch'):
        super().__init__(batch_size=batch_size, text_field=text_field, verbose=verbose)
        self.backend = backend
        self.model, self.encoder_config = model, config
        self.model_name, self.quantized, self.trust_remote_code = model_name, quantized, trust_remote_code
        self.device = device or model.device
        self.dimension = int(model.get_embedding_dimension() or model.encode(['dimension']).shape[1])

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, normalize: bool | None = None,
                        query_prefix: str | None = None, doc_prefix: str | None = None,
                        max_length: int | None = None, similarity: str | None = None, batch_size: int = 32,
                        text_field: str = 'text', device: str | None = None, quantize: bool = False,
                        trust_remote_code: bool = False, verbose: bool = False, backend: str = 'torch',
                        calibration: Sequence[str] | None = None, gate: BiasGate | None = None) -> HybridEncoder:
        """Load a checkpoint by Hub name or local path as ``SentenceTransformer`` loads it.

        A plain Hugging Face checkpoint (no ``modules.json``) gets sentence-transformers' default: mean pooling
        (last-token pooling for a causal language model). Pooling and heads are the checkpoint's own: retraining,
        not a keyword, changes them.

        Args:
            name_or_path: a Hub id (``intfloat/multilingual-e5-small``) or a local directory.
            normalize, query_prefix, doc_prefix, max_length, similarity: override the checkpoint's config
                (its prompts 'query' and 'passage' or 'document', its ``max_seq_length`` and similarity).
            batch_size: texts per forward pass.
            text_field: the document column to encode (e.g. ``'context'`` for LAReQA paragraphs).
            device: ``'cpu'``, ``'cuda'``...; a GPU is used when present, in bf16 (fp16 where bf16 is unsupported).
            quantize: int8 for CPU inference: with ``backend='torch'`` dynamic quantisation of the attention
                projections; with ``'onnx'`` ONNX Runtime dynamic quantisation; with ``'openvino'`` NNCF static
                quantisation calibrated on ``calibration``. Any int8 model is used only if ``gate`` (default
                :class:`~pyterrier_hybrid.retrieval.gate.BiasGate`) accepts it.
            trust_remote_code: run Python code shipped with the checkpoint (an ``auto_map`` or a custom module).
                Only this argument allows it: a checkpoint's own config cannot.
            verbose: progress bars.
            backend: ``'torch'``, ``'onnx'`` (ONNX Runtime) or ``'openvino'``, CPU only; the export is cached
                (see :mod:`pyterrier_hybrid.retrieval.backends`).
            calibration: texts of the target corpus to calibrate OpenVINO static int8 on (default: 300 XQuAD-R
                sentences of all languages, none of which the gate uses).
            gate: the bias gate int8 models must pass.
        """
        from sentence_transformers import SentenceTransformer
        name_or_path = str(name_or_path)
        target = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        if quantize and target.type != 'cpu':
            raise ValueError('quantize=True is the int8 CPU path; use device="cpu"')
        if backend != 'torch':
            from .backends import check_backend
            check_backend(backend)
            if target.type != 'cpu':
                raise ValueError(f'backend={backend!r} runs on CPU; use device="cpu" (or backend="torch" on a GPU)')
        try:
            model = SentenceTransformer(name_or_path, device=str(target), trust_remote_code=trust_remote_code,
                                        model_kwargs=_without_pooler(name_or_path, trust_remote_code))
        except Exception as error:  # safetensors, json, torch and transformers each raise their own types
            raise _load_error(name_or_path, error) from error
        overrides = dict(normalize=normalize, query_prefix=query_prefix, doc_prefix=doc_prefix,
                         max_length=max_length, similarity=similarity)
        config = replace(EncoderConfig.of(model), **{k: v for k, v in overrides.items() if v is not None})
        if max_length is not None:
            model.max_seq_length = max_length
        if target.type == 'cuda':
            model = model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        encoder = cls(model.eval(), config, model_name=name_or_path, batch_size=batch_size, text_field=text_field,
                      verbose=verbose, device=target, quantized=quantize, trust_remote_code=trust_remote_code,
                      backend=backend)
        if backend != 'torch' or quantize:
            from .backends import load_backend
            load_backend(encoder, calibration, gate)
        return encoder

    # --- the BiEncoder contract ------------------------------------------------------------------------------

    def query_encoder(self, verbose=None, batch_size=None) -> pt.Transformer:
        return HybridQueryEncoder(self, verbose=verbose, batch_size=batch_size)

    def doc_encoder(self, verbose=None, batch_size=None) -> pt.Transformer:
        return HybridDocEncoder(self, verbose=verbose, batch_size=batch_size)

    @property
    def sim_fn(self) -> pyterrier_dr.SimFn:
        """Dot product over the vectors this encoder returns (normalised ones when the similarity is cosine)."""
        return pyterrier_dr.SimFn.dot

    @property
    def max_length(self) -> int | None:
        return self.encoder_config.max_length

    def encode_queries(self, texts, batch_size: int | None = None) -> np.ndarray:
        return self.encode(list(texts), self.encoder_config.query_prefix, batch_size)

    def encode_docs(self, texts, batch_size: int | None = None) -> np.ndarray:
        return self.encode(list(texts), self.encoder_config.doc_prefix, batch_size)

    def encode_queries_torch(self, texts: list[str], batch_size: int | None = None) -> torch.Tensor:
        """Query vectors with gradients (for training); no length sorting, one batch."""
        from sentence_transformers.util import batch_to_device
        features = self.model.preprocess(texts, prompt=self.encoder_config.query_prefix)
        vectors = self.model(batch_to_device(features, self.device))['sentence_embedding']
        return torch.nn.functional.normalize(vectors, dim=-1) if self.encoder_config.normalize else vectors

    # --- encoding --------------------------------------------------------------------------------------------

    def encode(self, texts: list[str], prefix: str = '', batch_size: int | None = None,
               verbose: bool | None = None) -> np.ndarray:
        """``SentenceTransformer.encode``, one batch of similar token length at a time, longest first (so a memory
        peak shows at once). sentence-transformers sorts by characters, which in a multilingual corpus batches a
        Chinese sentence with English ones of the same characters but a fraction of its tokens, all padded."""
        batch_size = batch_size or self.batch_size
        verbose = self.verbose if verbose is None else verbose
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-n for n in self._token_lengths(texts, prefix)], kind='stable')
        starts = range(0, len(texts), batch_size)
        if verbose and len(texts) > batch_size:
            starts = pt.tqdm(starts, desc='encoding', unit='batch')
        with torch.inference_mode():
            for start in starts:
                rows = order[start:start + batch_size]
                vectors = self.model.encode([texts[i] for i in rows], prompt=prefix, batch_size=len(rows),
                                            convert_to_tensor=True, show_progress_bar=False,
                                            normalize_embeddings=self.encoder_config.normalize)
                out[rows] = vectors.float().cpu().numpy()
        return out

    def _token_lengths(self, texts: list[str], prefix: str) -> list[int]:
        """Token counts as the model sees them (prompt and special tokens included, truncated); character counts for
        a model without a Hugging Face tokenizer (static embeddings...)."""
        tokenizer = getattr(self.model[0], 'tokenizer', None)
        if not callable(tokenizer):
            return [len(prefix) + len(t) for t in texts]
        return [len(ids) for ids in tokenizer([prefix + t for t in texts], truncation=True,
                                              max_length=self.max_length)['input_ids']]

    # --- metadata --------------------------------------------------------------------------------------------

    def index_metadata(self) -> dict:
        """What an index records about the encoder that built it."""
        return {'model': self.model_name, 'dimension': self.dimension,
                'similarity': self.encoder_config.similarity, 'encoder_config': asdict(self.encoder_config)}

    def __rshift__(self, other):
        """``encoder >> index`` binds the encoder to the index (checked when retrieving, recorded when indexing)."""
        from .index import DenseIndex
        target = getattr(other, 'flex_index', other)
        if isinstance(target, DenseIndex):
            target.bind_encoder(self)
        return super().__rshift__(other)

    def __repr__(self) -> str:
        suffix = (f', backend={self.backend!r}' if self.backend != 'torch' else '') + (
            ', quantize=True' if self.quantized else '') + (
            ', trust_remote_code=True' if self.trust_remote_code else '')
        return f'HybridEncoder.from_pretrained({self.model_name!r}{suffix})'


def _without_pooler(name_or_path: str, trust_remote_code: bool) -> dict:
    """``add_pooling_layer=False`` for a local BERT-like checkpoint whose weights hold no pooler (#17).

    sentence-transformers never uses the pooler of such models, and mE5 drops it (its ``model_args`` say
    ``add_pooling_layer: false``), but ``SentenceTransformer.save`` forgets those ``model_args``: every model
    fine-tuned from mE5 would otherwise load with a random pooler and a LOAD REPORT calling it MISSING."""
    local = Path(name_or_path)
    single, index = local / 'model.safetensors', local / 'model.safetensors.index.json'
    if index.is_file():
        keys = json.loads(index.read_text(encoding='utf-8'))['weight_map']
    elif single.is_file():
        from safetensors import safe_open
        with safe_open(str(single), 'pt') as weights:
            keys = list(weights.keys())
    else:
        return {}
    if any('pooler.' in key for key in keys):
        return {}
    from transformers import MODEL_MAPPING, AutoConfig
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    model_class = MODEL_MAPPING.get(type(config), None)
    accepts = model_class is not None and 'add_pooling_layer' in inspect.signature(model_class.__init__).parameters
    return {'add_pooling_layer': False} if accepts else {}


def check_checkpoint(name_or_path: str | Path) -> None:
    """Raise an OSError naming the first corrupt JSON or safetensors file of a local checkpoint (headers only: cheap),
    so that a tool which loads it later (the trainer) fails with a file name rather than a loader's internals."""
    local = Path(name_or_path)
    for path in sorted(local.rglob('*.json')) if local.is_dir() else ():
        try:
            json.loads(path.read_text(encoding='utf-8'))
        except (ValueError, UnicodeDecodeError) as corrupt:
            raise OSError(f'{path} is not valid JSON ({corrupt}); the checkpoint {str(name_or_path)!r} is '
                          'corrupt') from None
    for path in sorted(local.rglob('*.safetensors')) if local.is_dir() else ():
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), 'pt'):
                pass
        except SafetensorError as corrupt:
            raise OSError(f'{path} is truncated or corrupt ({corrupt}); the checkpoint {str(name_or_path)!r} is '
                          'corrupt') from None


def _load_error(name_or_path: str, error: Exception) -> Exception:
    """The error to raise when a checkpoint does not load: it names the corrupt JSON or weights file when one is."""
    try:
        check_checkpoint(name_or_path)
    except OSError as corrupt:
        return corrupt
    if 'trust_remote_code' in str(error):
        return OSError(f'{name_or_path!r} asks to run Python code it ships; pass trust_remote_code=True if you '
                       f'trust it: {error}')
    return OSError(f'cannot load the checkpoint {name_or_path!r} (missing or corrupt?): '
                   f'{type(error).__name__}: {error}')
