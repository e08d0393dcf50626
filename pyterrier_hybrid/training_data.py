"""Parallel QA training data: items aligned across languages by an id, and the rows a trainer sees.

The format (JSONL, one item per line) is the unit of the hybrid batch strategy::

    {"id": "56beb434", "lang": "de", "query": "Wie viele ...?", "positive": "Die Verteidigung ...",
     "negatives": ["Pro Bowl Defensive Tackle ..."]}

Items with the same ``id`` are translations of one another (``negatives`` is optional). Loaders build items
from this format, from the LAReQA collections (answer sentence as positive, the other sentences of its paragraph
as hard negatives) and from ir_datasets docpair sets such as ``mmarco/v2/{lang}/train`` (aligned by query id).
"""
from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import ir_datasets
import numpy as np

from . import lareqa
from .atomic import write_atomically


class ParallelItem(NamedTuple):
    """One language version of a QA training item; ``id`` is shared by its translations."""
    id: str
    lang: str
    query: str
    positive: str
    negatives: tuple[str, ...] = ()


def read_items(path: str | os.PathLike) -> list[ParallelItem]:
    """Items from a JSONL file; a malformed line is reported with its file and line number."""
    items = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                items.append(ParallelItem(str(record['id']), record['lang'], record['query'], record['positive'],
                                          tuple(record.get('negatives', ()))))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f'{path}:{number}: not a training item ({error!r}); expected keys '
                                 'id, lang, query, positive and optionally negatives') from error
    return items


def write_items(items: Iterable[ParallelItem], path: str | os.PathLike) -> None:
    """Write items as JSONL, atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, 'w', encoding='utf-8') as f:
            for item in items:
                f.write(json.dumps({**item._asdict(), 'negatives': list(item.negatives)}, ensure_ascii=False) + '\n')

    write_atomically(path, write)


def lareqa_items(collection: str, langs: Iterable[str] | None = None) -> list[ParallelItem]:
    """LAReQA questions as items: the answer sentence is the positive, its paragraph's other sentences negatives."""
    items = []
    for lang in langs or lareqa.COLLECTIONS[collection]:
        data = lareqa._load_language(collection, lang)
        by_paragraph = {paragraph: [d.text for d in docs]
                        for paragraph, docs in itertools.groupby(data.docs, key=lambda d: d.doc_id.rsplit('-', 1)[0])}
        texts = {d.doc_id: d.text for d in data.docs}
        for qid, query in data.queries.items():
            answer = data.answers[qid]
            negatives = tuple(t for t in by_paragraph[answer.rsplit('-', 1)[0]] if t != texts[answer])
            items.append(ParallelItem(qid, lang, query.text, texts[answer], negatives))
    return items


def irds_items(dataset_ids: Mapping[str, str], limit: int | None = None) -> list[ParallelItem]:
    """Items from ir_datasets docpair sets, one per language, aligned by query id.

    Args:
        dataset_ids: language -> ir_datasets id with queries, docs and docpairs (``{'de': 'mmarco/v2/de/train'}``).
        limit: the first ``limit`` query ids of the first language's docpairs (and their translations).
    """
    items, wanted = [], None
    for lang, dataset_id in dataset_ids.items():
        dataset = ir_datasets.load(dataset_id)
        if not dataset.has_docpairs():
            raise ValueError(f'{dataset_id} has no docpairs; give a training set (e.g. mmarco/v2/{lang}/train)')
        queries = {q.query_id: q.text for q in dataset.queries_iter()}
        store = dataset.docs_store()
        pairs = {}
        for pair in dataset.docpairs_iter():
            if wanted is not None and pair.query_id not in wanted:
                continue
            pairs.setdefault(pair.query_id, pair)
            if wanted is None and limit is not None and len(pairs) >= limit:
                break
        if wanted is None:
            wanted = set(pairs)
        for qid, pair in pairs.items():
            positive, negative = store.get(pair.doc_id_a), store.get(pair.doc_id_b)
            items.append(ParallelItem(qid, lang, queries[qid], positive.default_text(), (negative.default_text(),)))
    return items


class TrainingRows(NamedTuple):
    """The trainer's rows (one per item and (query language, passage language)) and what the sampler needs.

    ``anchor[i]`` is item ``group[i]``'s query in ``query_lang[i]``; ``positive[i]`` and ``negative[i]`` are its
    passages in ``passage_lang[i]``; ``source[i]`` is the data set it came from.
    """
    anchor: list[str]
    positive: list[str]
    negative: list[str] | None
    group: np.ndarray
    query_lang: np.ndarray
    passage_lang: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.anchor)


NEGATIVE_LANGUAGES = ('passage', 'query')


def build_rows(sources: Mapping[str, Iterable[ParallelItem]], seed: int = 0,
               negative_language: str = 'passage') -> TrainingRows:
    """Every (query language, passage language) combination of every item, per named source.

    One hard negative per row is drawn (under ``seed``) from the passage's negatives. A trainer column cannot have
    holes, so a passage without negatives gets a random other item's positive in the same language instead (an
    easy negative); without any negatives at all there is no ``negative`` column.

    ``negative_language`` picks whose negatives a cross-lingual row gets: ``'passage'`` (those of the passage's
    version, as in a monolingual row) or ``'query'`` (those of the query's version: a sentence in the query's own
    language that must rank below the answer in another language, which is the language bias the Mul setting
    measures).
    """
    if negative_language not in NEGATIVE_LANGUAGES:
        raise ValueError(f'negative_language must be one of {", ".join(NEGATIVE_LANGUAGES)}, '
                         f'not {negative_language!r}')
    rng = np.random.default_rng(seed)
    columns = {k: [] for k in TrainingRows._fields}
    grouped = {}
    for source, items in sources.items():
        for item in items:
            if not item.query.strip() or not item.positive.strip():
                raise ValueError(f'item {item.id!r} ({item.lang}) of {source!r} has an empty query or positive')
            grouped.setdefault((source, item.id), {})[item.lang] = item
    if not grouped:
        raise ValueError('no training items')
    with_negatives = any(item.negatives for versions in grouped.values() for item in versions.values())
    positives_by_lang = {}
    for group, versions in enumerate(grouped.values()):
        for lang, item in versions.items():
            positives_by_lang.setdefault(lang, []).append((group, item.positive))
    for group, ((source, _), versions) in enumerate(grouped.items()):
        for q_lang, p_lang in itertools.product(sorted(versions), repeat=2):
            passage = versions[p_lang]
            columns['anchor'].append(versions[q_lang].query)
            columns['positive'].append(passage.positive)
            if with_negatives:
                contrast = versions[q_lang] if negative_language == 'query' else passage
                columns['negative'].append(_negative(contrast, group, positives_by_lang, rng))
            columns['group'].append(group)
            columns['query_lang'].append(q_lang)
            columns['passage_lang'].append(p_lang)
            columns['source'].append(source)
    return TrainingRows(
        anchor=columns['anchor'], positive=columns['positive'],
        negative=columns['negative'] if with_negatives else None,
        group=np.asarray(columns['group']), query_lang=np.asarray(columns['query_lang']),
        passage_lang=np.asarray(columns['passage_lang']), source=np.asarray(columns['source']))


def _negative(passage: ParallelItem, group: int, positives_by_lang: dict[str, list[tuple[int, str]]],
              rng: np.random.Generator) -> str:
    """A hard negative of the passage, or else another item's positive (in the same language where possible)."""
    if passage.negatives:
        return passage.negatives[rng.integers(len(passage.negatives))]
    candidates = [p for p in positives_by_lang[passage.lang] if p[0] != group]
    if not candidates:
        candidates = [p for positives in positives_by_lang.values() for p in positives if p[0] != group]
    if not candidates:
        raise ValueError('a single training item has no negatives to contrast with')
    return candidates[rng.integers(len(candidates))][1]
