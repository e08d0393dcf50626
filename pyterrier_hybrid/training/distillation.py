"""Multilingual knowledge distillation beside hybrid-batch InfoNCE, in one loss.

As in sentence-transformers' multilingual distillation (Reimers and Gurevych, 2020), a frozen teacher's vector of
an item's English version is the target of every version of it: the student learns to map a German question (and
the English question itself) to where the teacher puts the English one, and likewise for the answer. Added to
InfoNCE with a weight, it pulls translations together (the language bias Mul measures) while the English targets
hold the space where the pre-trained model had it (Mo). The teacher is the base model unless the recipe names
another; its vectors are computed once and cached (:mod:`~pyterrier_hybrid.training.base_vectors`).

Each training row carries, as its ``label``, the indices of its two targets (query, answer) in the teacher's
matrices, which the loss holds; items without an English version are their own targets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base_vectors import cached_vectors, encoder_of, model_identity
from .rows import TrainingRows


def teacher_targets(rows: TrainingRows, teacher, teacher_id: str, cache: Path | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's query and answer vectors of each item's English version, and per row the indices
    ``(query, answer)`` of its targets: ``(queries, answers, labels)``."""
    english = {}
    for i in range(len(rows)):
        if rows.query_lang[i] == rows.passage_lang[i] == 'en':
            english[int(rows.group[i])] = (rows.anchor[i], rows.positive[i])
    targets = [english.get(int(rows.group[i]), (rows.anchor[i], rows.positive[i])) for i in range(len(rows))]
    queries = sorted({q for q, _ in targets})
    answers = sorted({a for _, a in targets})
    query_at, answer_at = {t: i for i, t in enumerate(queries)}, {t: i for i, t in enumerate(answers)}
    encode, model_id = encoder_of(teacher, normalize=False), model_identity(teacher, teacher_id)
    return (cached_vectors(queries, 'query', encode, cache, model_id),
            cached_vectors(answers, 'passage', encode, cache, model_id),
            np.array([(query_at[q], answer_at[a]) for q, a in targets], dtype=np.int64))


class DistilledInfoNCE(nn.Module):
    """``infonce`` (a sentence-transformers ranking loss) plus ``weight`` times the mean squared distance of the
    anchors and positives to their teacher targets (rows of ``queries`` / ``answers`` picked by the labels)."""

    def __init__(self, infonce: nn.Module, queries: np.ndarray, answers: np.ndarray, weight: float):
        super().__init__()
        self.infonce, self.model, self.weight = infonce, infonce.model, weight
        self.register_buffer('queries', torch.from_numpy(queries), persistent=False)
        self.register_buffer('answers', torch.from_numpy(answers), persistent=False)

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns
        embeddings = embed_columns(self.model, sentence_features)
        ranking = self.infonce.compute_loss_from_embeddings(embeddings, labels)
        query_targets, answer_targets = self.queries[labels[:, 0]], self.answers[labels[:, 1]]
        distance = ((embeddings[0] - query_targets) ** 2).sum(-1) + ((embeddings[1] - answer_targets) ** 2).sum(-1)
        return ranking + self.weight * distance.mean()

    def get_config_dict(self) -> dict:
        return {**self.infonce.get_config_dict(), 'distillation': self.weight}
