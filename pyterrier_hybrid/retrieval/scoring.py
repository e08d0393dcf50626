"""Inner products that are the same on every machine, for every batch: exact ties stay ties.

BLAS kernels sum a dot product in an order that depends on the CPU, the library and the shape of the batch, so
float32 matmul and FAISS give near-tied documents different last bits, and two evaluators that should agree
order them differently. :func:`inner_products` is the one scoring function of exact search and of the fast
evaluator: each vector is split into integers (held in float64) small enough that every partial sum of their
products is exactly representable, so float64 BLAS computes the products exactly, in any order; the result is
then rounded once to float32. A (query, document) pair always gets the same score, and identical vectors tie.
"""
from __future__ import annotations

import math

import numpy as np

from pyterrier_hybrid.evaluation.ties import docno_keys, trec_order

QUERY_CHUNK = 256  # queries scored at once: bounds the float64 temporaries to ~10 MB per 1,000 documents


def _integer_split(vecs: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``vecs == (high + low * 2**-bits) * scale`` per row, ``high`` and ``low`` integers of at most ``bits`` bits.

    Exact up to 2 * bits significant bits of each row's largest component (44 for 384 dimensions; float32 has 24).
    """
    vecs = np.asarray(vecs, dtype=np.float32).astype(np.float64)
    _, exponent = np.frexp(np.abs(vecs).max(axis=1, initial=0.0))  # |component| < 2**exponent
    scale = np.exp2(exponent - bits)  # powers of two: multiplying by them is exact
    scaled = vecs / scale[:, None]  # |scaled| < 2**bits
    high = np.rint(scaled)
    low = np.rint((scaled - high) * 2.0 ** bits)  # |low| <= 2**(bits - 1)
    return high, low, scale


def inner_products(query_vecs: np.ndarray, doc_vecs: np.ndarray) -> np.ndarray:
    """The (queries, documents) float32 inner products, independent of batch composition and BLAS kernel."""
    dim = np.shape(doc_vecs)[1]
    # a sum of dim products of two bits-bit integers stays below 2**53: float64 holds every partial sum exactly
    bits = (53 - math.ceil(math.log2(max(dim, 1)))) // 2
    d_high, d_low, d_scale = _integer_split(doc_vecs, bits)
    d_cross = np.concatenate([d_low, d_high], axis=1).T
    d_high = d_high.T
    chunks = []
    for start in range(0, len(query_vecs), QUERY_CHUNK):
        q_high, q_low, q_scale = _integer_split(query_vecs[start:start + QUERY_CHUNK], bits)
        cross = np.concatenate([q_high, q_low], axis=1) @ d_cross
        exact = q_high @ d_high + cross * 2.0 ** -bits
        chunks.append((exact * q_scale[:, None] * d_scale[None, :]).astype(np.float32))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(d_scale)), np.float32)


def exact_search(query_vecs: np.ndarray, doc_vecs: np.ndarray, docnos: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top ``k`` documents by :func:`inner_products`, in trec_eval's order (ties: docno descending).

    Returns:
        (queries, k) scores and row numbers into ``doc_vecs``, best first.
    """
    keys = docno_keys(docnos)
    count = len(keys)
    k = min(k, count)
    # score rows in chunks of about 16M scores: every query ranks all documents
    chunk = max(1, min(QUERY_CHUNK, (1 << 24) // max(count, 1)))
    scores, rows = [], []
    for start in range(0, len(query_vecs), chunk):
        chunk_scores = inner_products(query_vecs[start:start + chunk], doc_vecs)
        candidates = _candidates(chunk_scores, k)
        order = np.take_along_axis(candidates, trec_order(np.take_along_axis(chunk_scores, candidates, axis=1),
                                                          keys[candidates])[:, :k], axis=1)
        scores.append(np.take_along_axis(chunk_scores, order, axis=1))
        rows.append(order)
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(scores), np.concatenate(rows)


def _candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns holding each row's k highest scores and every score tied with the k-th (which the docno decides)."""
    count = scores.shape[1]
    if 0 < k < count:
        kth = np.partition(scores, count - k, axis=1)[:, count - k, None]
        width = int((scores >= kth).sum(axis=1).max())
        if width < count:
            return np.argpartition(scores, count - width, axis=1)[:, count - width:]
    return np.broadcast_to(np.arange(count), scores.shape)
