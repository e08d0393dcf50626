"""Exact evaluation of pooled dense systems from score matrices instead of run frames.

:func:`evaluate_scores` computes, from each query's scores over a set of documents, the per-query values that
``pt.Experiment`` computes on the run holding those scores (ir_measures' DefaultPipeline: trec_eval's semantics,
ranks in trec_eval's order); :func:`evaluate_pooled` applies it to :class:`~pyterrier_hybrid.PooledDenseRetrieval`
systems, scored by the same :func:`~pyterrier_hybrid.retrieval.scoring.inner_products` as their exact retriever.
It answers only the measures :func:`supports` accepts, and refuses the others rather than approximate them.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import ir_datasets
import numpy as np
import pandas as pd
import pyterrier as pt
from ir_measures import measures

from pyterrier_hybrid.retrieval.scoring import inner_products

from .measures import _RankDistance
from .settings import Setting
from .ties import docno_keys, trec_ranks

# The measures computed here; every parameter other than the cutoff must keep its default (rel=1, gains=None,
# judged_only=False, dcg='log2'), because those change what trec_eval computes.
_MEASURES = {'AP': measures._AP, 'nDCG': measures._nDCG, 'R': measures._R, 'P': measures._P, 'RR': measures._RR,
             'RankDistance': _RankDistance}
_SUPPORTED = 'AP, AP@k, nDCG, nDCG@k, R@k, P@k, RR, RankDistance and RankDistance@k with default parameters'

if TYPE_CHECKING:  # the pooled retriever imports torch; the systems arrive built, so a hint is all this needs
    from pyterrier_hybrid.retrieval.pooled import PooledDenseRetrieval


def supports(measure) -> bool:
    """Whether the fast path computes ``measure`` exactly as ``pt.Experiment`` does (name and every parameter).

    RR@k is not supported: ir_measures computes it with MS MARCO's evaluator, which breaks score ties by docno
    ascending instead of trec_eval's order.
    """
    cls = _MEASURES.get(getattr(measure, 'NAME', None))
    if cls is None or not isinstance(measure, cls):
        return False
    params = dict(measure.params)
    cutoff = params.pop('cutoff', None)
    if cutoff is None and measure.NAME in ('R', 'P') or cutoff is not None and (cutoff < 1 or measure.NAME == 'RR'):
        return False
    return all(name in cls.SUPPORTED_PARAMS and value == cls.SUPPORTED_PARAMS[name].default
               for name, value in params.items())


def _refuse_unsupported(eval_metrics: Sequence) -> None:
    refused = [str(m) for m in eval_metrics if not supports(m)]
    if refused:
        raise ValueError(f'the fast path cannot compute {", ".join(refused)} exactly (it supports {_SUPPORTED}); '
                         f'evaluate those with evaluate_settings (pt.Experiment)')


def _values(measure, ranks: np.ndarray, gains: np.ndarray, count: int) -> np.ndarray:
    """trec_eval's value of ``measure`` per query, from the ranks (1-based, 0 = not ranked) and gains of its
    judged-relevant documents, sorted by rank with the unranked last, in a ranking of ``count`` documents."""
    cutoff = measure.params.get('cutoff')
    depth = count if cutoff is None else min(cutoff, count)
    ranked = (ranks > 0) & (ranks <= depth)
    relevant = gains >= 1  # trec_eval's relevance level 1: AP, R, P and RR count these
    found = ranked & relevant
    n_relevant = relevant.sum(axis=1)
    safe_ranks = np.where(ranks > 0, ranks, 1)
    if measure.NAME == 'AP':
        precision = np.cumsum(found, axis=1) / safe_ranks
        return np.where(found, precision, 0).sum(axis=1) / np.maximum(n_relevant, 1)
    if measure.NAME == 'R':
        return found.sum(axis=1) / np.maximum(n_relevant, 1)
    if measure.NAME == 'P':
        return found.sum(axis=1) / cutoff
    if measure.NAME == 'RR':
        return np.where(found, 1 / safe_ranks, 0).max(axis=1, initial=0)
    if measure.NAME == 'nDCG':
        dcg = np.where(ranked, gains / np.log2(safe_ranks + 1), 0).sum(axis=1)
        ideal = -np.sort(-gains, axis=1)[:, :cutoff]
        idcg = (ideal / np.log2(np.arange(2, ideal.shape[1] + 2))).sum(axis=1)
        return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1), 0)
    if measure.NAME == 'RankDistance':
        judged = gains > 0
        position = np.where(ranked, ranks, depth + 1)  # missing or cut: just past the end of the (cut) run
        high = np.where(judged, position, 0).max(axis=1, initial=0)
        low = np.where(judged, position, depth + 1).min(axis=1, initial=depth + 1)
        return np.where(judged.sum(axis=1) >= 2, high - low, 0).astype(float)
    raise AssertionError(f'supports() accepted {measure} but it has no implementation')


def evaluate_scores(scores: np.ndarray, docnos: Sequence[str], qids: Sequence[str], qrels: pd.DataFrame,
                    eval_metrics: Sequence, query_batch: int = 256) -> pd.DataFrame:
    """Per-query values of the full rankings of ``docnos`` by ``scores``, as ``pt.Experiment`` computes them.

    Args:
        scores: (queries, documents), row i for ``qids[i]``, column j for ``docnos[j]``.
        qrels: PyTerrier qrels (``qid, docno, label``). Queries without qrels are skipped and judged documents
            missing from ``docnos`` count as not retrieved, as in ir_measures.
        eval_metrics: measures :func:`supports` accepts; any other raises a ValueError naming it.
        query_batch: queries ranked at once (memory: 16 bytes per query and document).

    Returns:
        ``qid, measure, value``, one row per judged query and measure.
    """
    _refuse_unsupported(eval_metrics)
    qids = np.asarray(qids, dtype=object)
    rows = np.flatnonzero(pd.Index(qids).isin(qrels['qid']))
    judged = qrels[(qrels['label'] > 0) & qrels['qid'].isin(qids[rows])]
    by_query = judged.groupby('qid')
    width = max(by_query.size().max() if len(judged) else 0, 1)
    columns = pd.Index(np.asarray(docnos, dtype=object))
    targets = np.full((len(rows), width), -1)
    gains = np.zeros((len(rows), width))
    slot = {qid: i for i, qid in enumerate(qids[rows])}
    for qid, group in by_query:
        targets[slot[qid], :len(group)] = columns.get_indexer(group['docno'])
        gains[slot[qid], :len(group)] = group['label']
    keys = docno_keys(columns)
    ranks = np.zeros_like(targets)
    for start in range(0, len(rows), query_batch):
        batch = slice(start, start + query_batch)
        all_ranks = trec_ranks(scores[rows[batch]], keys)
        ranks[batch] = np.take_along_axis(all_ranks, np.maximum(targets[batch], 0), axis=1)
    ranks = np.where(targets >= 0, ranks, 0)
    by_rank = np.argsort(np.where(ranks > 0, ranks, np.iinfo(ranks.dtype).max), axis=1, kind='stable')
    ranks, gains = np.take_along_axis(ranks, by_rank, axis=1), np.take_along_axis(gains, by_rank, axis=1)
    return pd.concat([pd.DataFrame({'qid': qids[rows], 'measure': str(measure),
                                    'value': _values(measure, ranks, gains, len(columns))})
                      for measure in eval_metrics], ignore_index=True)


def evaluate_pooled(systems: dict[str, PooledDenseRetrieval | PooledVectors], settings: list[Setting], eval_metrics,
                    query_batch: int = 256) -> pd.DataFrame:
    """Exact per-query values of pooled dense systems over full rankings, from score matrices.

    The same numbers as ``evaluate_settings(..., perquery=True)``, query for query: both score with
    :func:`~pyterrier_hybrid.retrieval.scoring.inner_products` and rank in trec_eval's order. Seconds instead of
    minutes per system, because no 15M-row run frame is built, which is what comparing many trained models on
    all 132 XQuAD-R settings on a CPU needs. Only measures :func:`supports` accepts; others raise a ValueError.

    Returns:
        pt.Experiment's per-query long format (``name, qid, measure, value``) plus the setting columns.
    """
    _refuse_unsupported(eval_metrics)
    frames = []
    for setting in settings:
        dataset = pt.get_dataset(f'irds:{setting.dataset_id}')
        qrels = dataset.get_qrels()
        topics = dataset.get_topics('text')
        qids = topics.loc[topics['qid'].isin(qrels['qid']), 'qid'].tolist()
        doc_ids = [d.doc_id for d in ir_datasets.load(setting.dataset_id).docs_iter()]
        for name, system in systems.items():
            scores = inner_products(system.queries.vectors(qids), system.docs.vectors(doc_ids))
            values = evaluate_scores(scores, doc_ids, qids, qrels, eval_metrics, query_batch)
            frames.append(values.assign(name=name, **setting._asdict()))
    return pd.concat(frames, ignore_index=True)[['name', 'qid', 'measure', 'value', *Setting._fields]]


class VectorsById:
    """Vectors looked up by id, as :func:`evaluate_pooled` reads them from a pooled system's indexes."""

    def __init__(self, ids: Iterable[str], matrix: np.ndarray):
        self.rows, self.matrix = pd.Index(list(ids)), matrix

    def vectors(self, ids: Iterable[str]) -> np.ndarray:
        rows = self.rows.get_indexer(list(ids))
        if (rows < 0).any():
            raise KeyError(f'{int((rows < 0).sum())} id(s) have no vector')
        return self.matrix[rows]


class PooledVectors(NamedTuple):
    """A pooled system for :func:`evaluate_pooled` from vectors at hand (encoded in another process or by another
    library, or transformed after encoding): what it reads of a :class:`~pyterrier_hybrid.PooledDenseRetrieval`."""
    docs: VectorsById
    queries: VectorsById

    @classmethod
    def of(cls, doc_ids: Iterable[str], doc_vecs: np.ndarray, query_ids: Iterable[str],
           query_vecs: np.ndarray) -> PooledVectors:
        return cls(VectorsById(doc_ids, doc_vecs), VectorsById(query_ids, query_vecs))


def evaluate_perquery(systems: dict[str, PooledDenseRetrieval], settings: list[Setting],
                      eval_metrics: Sequence) -> pd.DataFrame:
    """Per-query values of every measure: those :func:`supports` accepts from score matrices
    (:func:`evaluate_pooled`), the others with ``pt.Experiment`` (:func:`evaluate_settings`); the same numbers."""
    from .settings import evaluate_settings
    fast = [m for m in eval_metrics if supports(m)]
    slow = [m for m in eval_metrics if not supports(m)]
    frames = [evaluate_pooled(systems, settings, fast)] if fast else []
    if slow:
        frames.append(evaluate_settings(systems, settings, slow, perquery=True))
    return pd.concat(frames, ignore_index=True)
