"""Reading JSONL training items: every malformed line is an error naming its file and line."""
from __future__ import annotations

import json

import pytest

from pyterrier_hybrid import ParallelItem, read_items, write_items

GOOD = {'id': '56beb434', 'lang': 'de', 'query': 'Wie viele?', 'positive': 'Die Verteidigung', 'negatives': ['Pro']}


def jsonl(tmp_path, *records) -> str:
    path = tmp_path / 'items.jsonl'
    path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in records))
    return str(path)


def test_round_trip_and_integer_ids(tmp_path):
    items = [ParallelItem('1', 'en', 'q', 'p', ('n1', 'n2')), ParallelItem('1', 'de', 'F', 'P')]
    write_items(items, tmp_path / 'items.jsonl')
    assert read_items(tmp_path / 'items.jsonl') == items
    assert read_items(jsonl(tmp_path, {**GOOD, 'id': 7}))[0].id == '7'


@pytest.mark.parametrize(('change', 'reason'), [
    ({'negatives': 'Pro Bowl'}, 'negatives is "Pro Bowl", not a list of strings'),
    ({'negatives': ['a', 3]}, 'negatives is ["a", 3], not a list of strings'),
    ({'negatives': None}, 'negatives is null'),
    ({'id': None}, 'id is null'),
    ({'id': ''}, 'id is ""'),
    ({'id': 1.5}, 'id is 1.5'),
    ({'id': True}, 'id is true'),
    ({'query': 42}, 'query is 42, not a string'),
    ({'lang': 7}, 'lang is 7, not a string'),
    ({'lang': ''}, 'lang is empty'),
])
def test_wrong_types_name_file_line_and_field(tmp_path, change, reason):
    path = jsonl(tmp_path, GOOD, {**GOOD, 'lang': 'en'}, {**GOOD, 'lang': 'es', **change})
    with pytest.raises(ValueError) as error:
        read_items(path)
    assert f'{path}:3: not a training item ({reason}' in str(error.value)


def test_missing_id_or_non_object_line(tmp_path):
    path = jsonl(tmp_path, {k: v for k, v in GOOD.items() if k != 'id'})
    with pytest.raises(ValueError, match=r"items.jsonl:1: not a training item \(missing key 'id'\)"):
        read_items(path)
    with pytest.raises(ValueError, match=r'items.jsonl:2: not a training item \(a list, not an object\)'):
        read_items(jsonl(tmp_path, GOOD, '["de", "q"]'))


def test_duplicate_id_and_language_names_both_lines(tmp_path):
    path = jsonl(tmp_path, GOOD, {**GOOD, 'lang': 'en'}, '', {**GOOD, 'query': 'Noch einmal?'})
    with pytest.raises(ValueError, match=r"items.jsonl:4: item '56beb434' in language 'de' is already on line 1"):
        read_items(path)
