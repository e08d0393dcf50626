"""Evaluate retrieval systems over many language settings at once, and macro-average them as the papers do.

A :class:`Setting` is one ir_datasets id with its query and document languages and its kind:

* ``Mo``: queries and documents in the same language;
* ``Cr``: queries in one language, documents in another;
* ``Mul``: queries in one language, documents pooled over all languages.

:func:`evaluate_settings` runs ``pt.Experiment`` once per setting (so baselines and significance tests work as
usual) and :func:`macro_average` turns its rows into the Mo / Cr / Mul table of arXiv 2408.10536.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import ir_datasets
import numpy as np
import pandas as pd
import pyterrier as pt

from pyterrier_hybrid.data import lareqa

from .measures import DEFAULT_MEASURES
from .ties import trec_order

KINDS = ('Mo', 'Cr', 'Mul')
ALL_LANGUAGES = 'all'


class Setting(NamedTuple):
    """One evaluation setting: an ir_datasets id and what it measures."""
    dataset_id: str
    kind: str  # 'Mo', 'Cr' or 'Mul'
    query_lang: str
    doc_lang: str  # a language code, or 'all' for the pooled corpus


def _check_choices(chosen: Iterable[str], valid: Sequence[str], what: str) -> list[str]:
    chosen = list(chosen)
    unknown = [c for c in chosen if c not in valid]
    if unknown:
        raise KeyError(f'unknown {", ".join(map(repr, unknown))} for {what}; valid: {", ".join(valid)}')
    return chosen


def lareqa_settings(collection: str = 'xquad-r', kinds: Iterable[str] = KINDS,
                    langs: Iterable[str] | None = None) -> list[Setting]:
    """The Mo, Cr and Mul settings of a LAReQA collection (``xquad-r``: 11 + 110 + 11; ``mlqa-r``: 7 + 42 + 7)."""
    _check_choices([collection], list(lareqa.COLLECTIONS), 'LAReQA collections')
    langs = _check_choices(langs or lareqa.COLLECTIONS[collection], lareqa.COLLECTIONS[collection],
                         f'lareqa/{collection}')
    kinds = _check_choices(kinds, KINDS, 'setting kinds')
    settings = []
    for q in langs:
        for c in langs:
            kind = 'Mo' if q == c else 'Cr'
            if kind in kinds:
                settings.append(Setting(f'lareqa/{collection}/{q}/{c}', kind, q, c))
        if 'Mul' in kinds:
            settings.append(Setting(f'lareqa/{collection}/{q}', 'Mul', q, ALL_LANGUAGES))
    return settings


def miracl_languages(split: str = 'dev') -> list[str]:
    """The MIRACL languages that ir_datasets has with topics and qrels for ``split``."""
    return sorted(i.split('/')[1] for i in ir_datasets.registry if i.startswith('miracl/') and i.endswith(f'/{split}'))


def miracl_settings(langs: Iterable[str] | None = None, split: str = 'dev') -> list[Setting]:
    """One Mo setting per MIRACL language (``miracl/{lang}/{split}``); all languages of the split by default."""
    valid = miracl_languages(split)
    langs = _check_choices(langs or valid, valid, f'miracl/*/{split}')
    return [Setting(f'miracl/{lang}/{split}', 'Mo', lang, lang) for lang in langs]


# Measures whose value depends only on the top ``cutoff`` documents and the ranks of the relevant ones.
_PREFIX_MEASURES = {'AP', 'nDCG', 'R', 'P', 'RR', 'Success', 'RankDistance'}


class PruneAfterLastRelevant(pt.Transformer):
    """Drops, per query, the documents ranked below both ``depth`` and the last relevant document.

    An evaluation-time shortcut, not a retrieval step: for AP, nDCG, R@k, P@k (k <= depth), RR and rank distance
    the pruned run scores exactly as the full one, because those measures only see the top ``depth`` documents
    and the ranks of the relevant ones. Ranks follow trec_eval's order (:func:`~.ties.trec_order`). On full
    rankings of a 13k-document corpus it shrinks the run ~10x, and ``pt.Experiment`` (whose cost is converting
    the run for ir_measures) speeds up accordingly.
    """

    def __init__(self, qrels: pd.DataFrame, depth: int):
        self.relevant = qrels.loc[qrels['label'] > 0, ['qid', 'docno']]
        self.depth = depth

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp)
        if not len(inp):
            return inp
        # integer codes instead of strings: sorting 15M-row full rankings by string columns takes minutes
        qid_codes, qids = pd.factorize(inp['qid'])
        doc_codes, docnos = pd.factorize(inp['docno'], sort=True)  # code order is docno order
        order = trec_order(inp['score'].to_numpy(), doc_codes, groups=qid_codes)
        sorted_qids = qid_codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_qids[1:] != sorted_qids[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        position = np.arange(len(order)) - np.repeat(starts, sizes)
        relevant_q = qids.get_indexer(self.relevant['qid'])
        relevant_d = docnos.get_indexer(self.relevant['docno'])
        known = (relevant_q >= 0) & (relevant_d >= 0)
        relevant_keys = relevant_q[known].astype(np.int64) * len(docnos) + relevant_d[known]
        keys = sorted_qids.astype(np.int64) * len(docnos) + doc_codes[order]
        last_relevant = np.maximum.reduceat(np.where(np.isin(keys, relevant_keys), position, -1), starts)
        keep_until = np.repeat(np.maximum(last_relevant, self.depth - 1), sizes)
        return inp.iloc[order[position <= keep_until]]


def _prune_depth(eval_metrics: Sequence) -> int | None:
    """The run depth the measures need beyond the last relevant document; None if pruning would change them."""
    depth = 1
    for measure in eval_metrics:
        name = getattr(measure, 'NAME', None)
        cutoff = measure.params.get('cutoff') if hasattr(measure, 'params') else None
        # P over the whole run counts every document; RR@k is MS MARCO's, which ranks ties by docno ascending,
        # so the tied documents pruned after the last relevant one (in trec_eval's order) can move it up
        if name not in _PREFIX_MEASURES or (name == 'P' and cutoff is None) or (name == 'RR' and cutoff is not None):
            return None
        depth = max(depth, cutoff or 1)
    return depth


def evaluate_settings(
    systems: Mapping[str, Callable[[Setting], pt.Transformer]],
    settings: Iterable[Setting],
    eval_metrics: Sequence = DEFAULT_MEASURES,
    prune: bool = True,
    **experiment_kwargs,
) -> pd.DataFrame:
    """Run ``pt.Experiment`` on every setting and stack the results.

    Args:
        systems: name -> a function that builds the system's pipeline for a setting (for example one dense
            retriever restricted to the setting's document language, over one shared index).
        settings: from :func:`lareqa_settings`, :func:`miracl_settings` or hand-made.
        eval_metrics: ir_measures objects, :data:`pyterrier_hybrid.RankDistance` included.
        prune: evaluate through :class:`PruneAfterLastRelevant` when every measure allows it (same values, much
            faster on full rankings).
        experiment_kwargs: passed to ``pt.Experiment`` (``baseline``, ``correction``, ``perquery`` ...).

    Returns:
        One row per system and setting (per query too with ``perquery=True``), with the setting's
        ``dataset_id``, ``kind``, ``query_lang`` and ``doc_lang`` columns next to ``pt.Experiment``'s.
    """
    frames = []
    depth = _prune_depth(eval_metrics) if prune else None
    for setting in settings:
        dataset = pt.get_dataset(f'irds:{setting.dataset_id}')
        qrels = dataset.get_qrels()
        pipelines = [build(setting) for build in systems.values()]
        if depth is not None:
            pipelines = [pipeline >> PruneAfterLastRelevant(qrels, depth) for pipeline in pipelines]
        result = pt.Experiment(
            pipelines,
            dataset.get_topics('text'),
            qrels,
            eval_metrics=list(eval_metrics),
            names=list(systems),
            **experiment_kwargs,
        )
        frames.append(result.assign(**setting._asdict()))
    if not frames:
        raise ValueError('no settings to evaluate')
    return pd.concat(frames, ignore_index=True)
