"""trec_eval's ranking order, declared once: score descending, then docno descending.

trec_eval (and so ir_measures' pytrec_eval provider, which computes pt.Experiment's AP, nDCG, R and P) re-sorts
every run this way, whatever ranks the run carries. Every ranking this package computes (the exact retriever,
the fast evaluator, :data:`~pyterrier_hybrid.RankDistance`, ``PruneAfterLastRelevant``) orders by
:func:`trec_order`, so its ranks are the ones the measures see, exact score ties included.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def docno_keys(docnos: Sequence[str] | np.ndarray) -> np.ndarray:
    """Integer keys ordered as the docnos are (code point order, which is the UTF-8 byte order trec_eval uses)."""
    return pd.factorize(np.asarray(docnos, dtype=object), sort=True)[0]


def trec_order(scores: np.ndarray, doc_keys: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """The permutation that sorts the last axis of ``scores`` in trec_eval's order.

    Args:
        scores: one score per document, or a (queries, documents) matrix.
        doc_keys: the documents' :func:`docno_keys`, aligned with (or broadcast to) ``scores``.
        groups: for a 1-D run of several queries, each row's query code: queries are ranked separately.
    """
    keys = (-np.broadcast_to(doc_keys, np.shape(scores)), -np.asarray(scores))
    return np.lexsort(keys if groups is None else (*keys, groups), axis=-1)


def trec_ranks(scores: np.ndarray, doc_keys: np.ndarray) -> np.ndarray:
    """The 1-based trec_eval rank of every document (last axis of ``scores``)."""
    order = trec_order(scores, doc_keys)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, order.shape[-1] + 1), order.shape), axis=-1)
    return ranks
