"""A frozen model's vectors of training texts, computed once: what mining ranks with and distillation learns from.

They depend only on the model and the texts (not on the seed or the rest of the recipe), so they are cached, one
``.npy`` per model, role and text set, written atomically, and every seed of a run reuses them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.checkpoints import digest

#: ``encode(texts, role)`` -> one vector per text; role is 'query' or 'passage'.
Encode = Callable[[list[str], str], np.ndarray]


def prompts(model) -> tuple[str, str]:
    """The query and passage prompts of a sentence-transformers model ('' where it has none)."""
    known = model.prompts or {}
    return known.get('query', ''), known.get('passage', known.get('document', ''))


def encoder_of(model, normalize: bool = True) -> Encode:
    """``encode(texts, role)`` with a sentence-transformers model and its prompts, as training embeds them."""
    query_prompt, passage_prompt = prompts(model)

    def encode(texts: list[str], role: str) -> np.ndarray:
        return model.encode(texts, prompt=query_prompt if role == 'query' else passage_prompt, batch_size=64,
                            normalize_embeddings=normalize, convert_to_numpy=True)
    return encode


def model_identity(model, checkpoint_id: str) -> str:
    """What a model's vectors depend on: its checkpoint (by content), truncation length and prompts."""
    return digest({'checkpoint': checkpoint_id, 'max_length': model.max_seq_length, 'prompts': prompts(model)})


def cached_vectors(texts: list[str], role: str, encode: Encode, cache: Path | None, model_id: str) -> np.ndarray:
    """``encode(texts, role)``, read from or written to ``cache`` under a key of the model, role and texts."""
    path = None if cache is None else cache / f'{role}-{digest({"model": model_id, "texts": texts})[:16]}.npy'
    if path is not None and path.is_file():
        return np.load(path)
    vectors = np.asarray(encode(texts, role), dtype=np.float32)
    if vectors.shape[0] != len(texts):
        raise ValueError(f'the encoder returned {vectors.shape[0]} vectors for {len(texts)} texts')
    if path is not None:
        write_atomically(path, lambda tmp: np.save(tmp, vectors, allow_pickle=False))
    return vectors
