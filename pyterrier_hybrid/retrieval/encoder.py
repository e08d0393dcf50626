"""Bi-encoders as PyTerrier transformers: any Hugging Face / sentence-transformers checkpoint, fast on CPU and GPU.

:class:`HybridEncoder` is a :class:`pyterrier_dr.BiEncoder`, so ``encoder >> index``, ``encoder.text_scorer()``
and pyterrier-dr's indexes and retrievers all work with it. It runs the Transformer itself rather than through
``SentenceTransformer.encode`` so that it can sort by token length (minimal padding), quantise to int8 for CPU
inference, and read pooling, normalisation, prompts and max length from the checkpoint's own files.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_dr
import torch
from pyterrier_dr.biencoder import BiDocEncoder, BiQueryEncoder


@dataclass(frozen=True)
class EncoderConfig:
    """How a checkpoint turns text into a vector; read from its sentence-transformers files."""
    pooling: str = 'mean'  # 'mean' or 'cls'
    normalize: bool = True  # unit vectors, so that an inner-product index serves cosine similarity
    query_prefix: str = ''
    doc_prefix: str = ''
    max_length: int = 512
    similarity: str = 'cosine'  # 'cosine' or 'dot'; stored with an index and checked against it

    def __post_init__(self):
        if self.pooling not in ('mean', 'cls'):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {self.pooling!r}")
        if self.similarity not in ('cosine', 'dot'):
            raise ValueError(f"similarity must be 'cosine' or 'dot', not {self.similarity!r}")
        if self.similarity == 'cosine' and not self.normalize:
            raise ValueError('cosine similarity is served as inner product over unit vectors: it needs normalize=True')


def _read_json(name_or_path: str, filename: str) -> dict | list | None:
    """A checkpoint file as JSON, from a local directory or the Hub cache; None when the checkpoint lacks it."""
    local = Path(name_or_path)
    if local.is_dir():
        path = local / filename
        return json.loads(path.read_text()) if path.is_file() else None
    from transformers.utils import cached_file
    path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(path).read_text()) if path else None


def read_encoder_config(name_or_path: str, tokenizer_max_length: int | None = None) -> EncoderConfig:
    """Pooling, normalisation, prompts and max length as sentence-transformers would use them."""
    modules = _read_json(name_or_path, 'modules.json') or []
    pooling_path = next((m['path'] for m in modules if m['type'].endswith('.Pooling')), '1_Pooling')
    pooling_cfg = _read_json(name_or_path, f'{pooling_path}/config.json') or {}
    st_cfg = _read_json(name_or_path, 'config_sentence_transformers.json') or {}
    bert_cfg = _read_json(name_or_path, 'sentence_bert_config.json') or {}
    prompts = st_cfg.get('prompts', {})
    similarity = 'dot' if st_cfg.get('similarity_fn_name') == 'dot' else 'cosine'
    max_length = bert_cfg.get('max_seq_length') or tokenizer_max_length or 512
    return EncoderConfig(
        pooling='cls' if pooling_cfg.get('pooling_mode_cls_token') else 'mean',
        normalize=similarity == 'cosine' or any(m['type'].endswith('.Normalize') for m in modules),
        query_prefix=prompts.get('query', ''),
        doc_prefix=prompts.get('passage', prompts.get('document', '')),
        max_length=min(max_length, tokenizer_max_length or max_length),
        similarity=similarity,
    )


def _check_texts(inp: pd.DataFrame, text_field: str, id_field: str) -> None:
    """Empty texts encode to the prefix alone, which silently matches everything equally: refuse them."""
    empty = inp[text_field].isna() | (inp[text_field].astype(str).str.strip() == '')
    if empty.any():
        ids = inp.loc[empty, id_field].astype(str).tolist() if id_field in inp.columns else []
        shown = ', '.join(ids[:5]) + (' ...' if len(ids) > 5 else '')
        raise ValueError(f'{int(empty.sum())} empty {text_field!r} value(s) ({id_field}: {shown}); '
                         'drop or fill them before encoding')


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
    """Adds ``doc_vec``; refuses empty documents."""

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=[self.text_field])
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

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: EncoderConfig, *, model_name: str = '',
                 batch_size: int = 32, text_field: str = 'text', verbose: bool = False,
                 device: torch.device | None = None, quantized: bool = False):
        super().__init__(batch_size=batch_size, text_field=text_field, verbose=verbose)
        self.model, self.tokenizer, self.encoder_config = model, tokenizer, config
        self.model_name, self.quantized = model_name, quantized
        self.device = device or next(model.parameters()).device
        self.max_length = config.max_length

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, pooling: str | None = None, normalize: bool | None = None,
                        query_prefix: str | None = None, doc_prefix: str | None = None,
                        max_length: int | None = None, similarity: str | None = None, batch_size: int = 32,
                        text_field: str = 'text', device: str | None = None, quantize: bool = False,
                        verbose: bool = False) -> HybridEncoder:
        """Load a checkpoint by Hub name or local path; every keyword overrides what the checkpoint says.

        Args:
            name_or_path: a Hub id (``intfloat/multilingual-e5-small``) or a local directory.
            pooling, normalize, query_prefix, doc_prefix, max_length, similarity: override the checkpoint's config.
            batch_size: texts per forward pass.
            text_field: the document column to encode (e.g. ``'context'`` for LAReQA paragraphs).
            device: ``'cpu'``, ``'cuda'``...; a GPU is used when present, in bf16 (fp16 where bf16 is unsupported).
            quantize: int8 dynamic quantisation of the linear layers, for CPU inference.
            verbose: progress bars.
        """
        from transformers import AutoModel, AutoTokenizer
        name_or_path = str(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as error:
            raise OSError(f'cannot load a tokenizer from {name_or_path!r}: {error}') from error
        config = read_encoder_config(name_or_path, tokenizer_max_length=_tokenizer_limit(tokenizer))
        overrides = dict(pooling=pooling, normalize=normalize, query_prefix=query_prefix, doc_prefix=doc_prefix,
                         max_length=max_length, similarity=similarity)
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        model_args = (_read_json(name_or_path, 'sentence_bert_config.json') or {}).get('model_args', {})
        try:
            model = AutoModel.from_pretrained(name_or_path, **model_args)
        except Exception as error:  # safetensors, torch and transformers each raise their own types
            raise OSError(f'cannot load model weights from {name_or_path!r} (missing or corrupt checkpoint?): '
                          f'{error}') from error
        target = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        if quantize:
            if target.type != 'cpu':
                raise ValueError('quantize=True is the int8 CPU path; use device="cpu"')
            model = _quantize_int8(model)
        elif target.type == 'cuda':
            model = model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        model = model.to(target).eval()
        return cls(model, tokenizer, config, model_name=name_or_path, batch_size=batch_size, text_field=text_field,
                   verbose=verbose, device=target, quantized=quantize)

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
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode_queries(self, texts, batch_size: int | None = None) -> np.ndarray:
        return self.encode(list(texts), self.encoder_config.query_prefix, batch_size)

    def encode_docs(self, texts, batch_size: int | None = None) -> np.ndarray:
        return self.encode(list(texts), self.encoder_config.doc_prefix, batch_size)

    def encode_queries_torch(self, texts: list[str], batch_size: int | None = None) -> torch.Tensor:
        """Query vectors with gradients (for training); no length sorting, one batch."""
        batch = self.tokenizer([self.encoder_config.query_prefix + t for t in texts], padding=True,
                               truncation=True, max_length=self.max_length, return_tensors='pt').to(self.device)
        return self._pool(self.model(**batch).last_hidden_state, batch['attention_mask'])

    # --- encoding --------------------------------------------------------------------------------------------

    def encode(self, texts: list[str], prefix: str = '', batch_size: int | None = None,
               verbose: bool | None = None) -> np.ndarray:
        """Encode texts in batches of similar token length, longest first (so a memory peak shows at once)."""
        batch_size = batch_size or self.batch_size
        verbose = self.verbose if verbose is None else verbose
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length,
                             add_special_tokens=True)['input_ids']
        order = np.argsort([-len(i) for i in ids], kind='stable')
        starts = range(0, len(texts), batch_size)
        if verbose and len(texts) > batch_size:
            starts = pt.tqdm(starts, desc='encoding', unit='batch')
        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in starts:
                rows = order[start:start + batch_size]
                width = len(ids[rows[0]])
                input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, row in enumerate(rows):
                    input_ids[r, :len(ids[row])] = ids[row]
                    mask[r, :len(ids[row])] = 1
                input_ids, mask = torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                out[rows] = self._pool(hidden, mask).float().cpu().numpy()
        return out

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder_config.pooling == 'cls':
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, tokens, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        if self.encoder_config.normalize:
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return pooled

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
        suffix = ', quantize=True' if self.quantized else ''
        return f'HybridEncoder.from_pretrained({self.model_name!r}{suffix})'


def _tokenizer_limit(tokenizer) -> int | None:
    """The tokenizer's max length, ignoring the huge sentinel transformers uses for 'unset'."""
    limit = getattr(tokenizer, 'model_max_length', None)
    return limit if limit and limit < 100_000 else None


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of the attention projections (query, key, value, output), per output channel.

    The feed-forward layers stay fp32: dynamic quantisation scales each activation tensor as a whole, and the
    feed-forward inputs carry outlier channels that such scales crush. On multilingual-e5-small, quantising every
    linear layer per tensor cost 0.091 XQuAD-R Mul AP, all but the feed-forward outputs per channel 0.023, the
    attention projections alone 0.006 (benchmarks/results/encode_speed.md, lareqa_xquad-r_mE5-small-int8.*)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    layers = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and '.attention.' in f'.{name}.'}
    return quantize_dynamic(model, layers, dtype=torch.qint8)
