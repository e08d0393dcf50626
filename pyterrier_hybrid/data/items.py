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

from pyterrier_hybrid.atomic import write_atomically

from . import lareqa


class ParallelItem(NamedTuple):
    """One language version of a QA training item; ``id`` is shared by its translations."""
    id: str
    lang: str
    query: str
    positive: str
    negatives: tuple[str, ...] = ()


def read_items(path: str | os.PathLike) -> list[ParallelItem]:
    """Items from a JSONL file, each line validated: a bad line is reported with its file and line number.

    Items are aligned across languages by ``id``, so a missing or null id, or a second line with the same
    (id, lang), would silently pair unrelated items or drop one; both are errors.
    """
    items, seen = [], {}
    with open(path, 'rb') as f:
        for number, raw in enumerate(f, 1):
            try:  # -sig on the first line: a byte-order mark (Windows editors write one) is not part of the JSON
                line = raw.decode('utf-8-sig' if number == 1 else 'utf-8')
            except UnicodeDecodeError as error:
                raise ValueError(f'{path}:{number}: not UTF-8 ({error.reason} at byte {error.start} of the line); '
                                 'training items are UTF-8 JSON lines') from None
            if not line.strip():
                continue
            try:
                item = _item(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                reason = f'missing key {error}' if isinstance(error, KeyError) else str(error)
                raise ValueError(f'{path}:{number}: not a training item ({reason}); expected keys id (string or '
                                 'integer), lang, query, positive (strings) and optionally negatives (a list of '
                                 'strings)') from error
            first = seen.setdefault((item.id, item.lang), number)
            if first != number:
                raise ValueError(f'{path}:{number}: item {item.id!r} in language {item.lang!r} is already on line '
                                 f'{first}; each (id, lang) may appear once')
            items.append(item)
    return items


def _item(record: object) -> ParallelItem:
    """One JSON record as an item, with its types checked (str() would turn null into 'None')."""
    if not isinstance(record, dict):
        raise TypeError(f'a {type(record).__name__}, not an object')
    ident = record['id']
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or ident == '':
        raise TypeError(f'id is {json.dumps(ident)}')
    texts = {key: record[key] for key in ('lang', 'query', 'positive')}
    for key, value in texts.items():
        if not isinstance(value, str):
            raise TypeError(f'{key} is {json.dumps(value, ensure_ascii=False)}, not a string')
    if not texts['lang']:
        raise ValueError('lang is empty')
    negatives = record.get('negatives', [])
    if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
        raise TypeError(f'negatives is {json.dumps(negatives, ensure_ascii=False)[:80]}, not a list of strings')
    return ParallelItem(str(ident), texts['lang'], texts['query'], texts['positive'], tuple(negatives))


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
