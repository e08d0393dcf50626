"""Artificial code-switching on fixed sentences, tiny lexicons and the real ../shared lexicons."""
from __future__ import annotations

import io
import urllib.error

import pytest
from conftest import SHARED

from pyterrier_hybrid import ParallelItem
from pyterrier_hybrid.data import code_switching
from pyterrier_hybrid.data.code_switching import CodeSwitcher, Lexicon, code_switched_items, load_lexicon

LEXICONS = SHARED / 'data' / 'lexicons'
DE = Lexicon('en', 'de', {'the': ('die',), 'defense': ('verteidigung',), 'points': ('punkte',),
                          'panthers': ('panther',), 'gave': ('gab',)})
AR = Lexicon('en', 'ar', {'the': ('ال',), 'defense': ('الدفاع',), 'points': ('نقاط',)})
SENTENCE = 'The Panthers defense gave up just 308 points!'


def test_fixed_seed_gives_exact_output():
    switcher = CodeSwitcher(DE, p=0.5, seed=3)
    assert switcher(SENTENCE) == switcher(SENTENCE) == CodeSwitcher(DE, p=0.5, seed=3)(SENTENCE)
    assert switcher(SENTENCE) == 'The Panthers verteidigung gab up just 308 points!'
    assert CodeSwitcher(DE, p=0.5, seed=4)(SENTENCE) != switcher(SENTENCE)


def test_p0_changes_nothing_and_p1_replaces_every_known_word():
    assert CodeSwitcher(DE, p=0.0)(SENTENCE) == SENTENCE
    switcher = CodeSwitcher(DE, p=1.0)
    assert switcher(SENTENCE) == 'Die Panther verteidigung gab up just 308 punkte!'
    assert switcher.stats['switchable'] == 5 and switcher.stats['words'] == 7
    assert switcher.stats.ratio('de') == 1.0


def test_unknown_words_punctuation_case_and_rtl_survive():
    switcher = CodeSwitcher([AR], p=1.0)
    text = 'THE defense — «unknown»,  points:  12.5%\tمرحبا'
    assert switcher(text) == 'ال الدفاع — «unknown»,  نقاط:  12.5%\tمرحبا'
    mixed = CodeSwitcher(DE, p=1.0)('ThE DEFENSE Defense defense')
    assert mixed == 'Die VERTEIDIGUNG Verteidigung verteidigung'


def test_multilingual_switching_draws_the_language_per_word():
    switcher = CodeSwitcher([DE, AR], p=1.0, seed=0)
    outputs = [switcher(f'the defense points {i}') for i in range(40)]
    assert {'die', 'ال'} <= {o.split()[0] for o in outputs}
    assert switcher.stats['switched:de'] + switcher.stats['switched:ar'] == 120
    assert 0.3 < switcher.stats.ratio('de') < 0.7


def test_malformed_lexicon_line_names_file_and_line(tmp_path):
    path = tmp_path / 'en-xx.txt'
    path.write_text('house haus\ngarden\nboat boot\n')
    with pytest.raises(ValueError, match=r'en-xx.txt:2: expected "source target"'):
        load_lexicon(path)
    (tmp_path / 'words.txt').write_text('a b\n')
    with pytest.raises(ValueError, match='language pair'):
        load_lexicon(tmp_path / 'words.txt')
    assert load_lexicon(tmp_path / 'words.txt', 'en', 'xx').entries == {'a': ('b',)}
    with pytest.raises(ValueError, match=r'p must lie in \[0, 1\]'):
        CodeSwitcher(DE, p=1.5)


def test_real_lexicons_and_coverage_warning():
    de = load_lexicon(LEXICONS / 'en-de.txt')
    assert (de.src, de.tgt) == ('en', 'de') and 'dog' in de.entries and 'hund' in de.entries['dog']
    ar = load_lexicon(LEXICONS / 'en-ar.1tok.txt')
    assert len(ar) > 50_000
    items = [ParallelItem('1', 'en', 'How many points did the defense give up?', 'The defense gave up 308 points.',
                          ('Kurt Coleman led the team.',)),
             ParallelItem('1', 'de', 'Wie viele Punkte?', 'Die Verteidigung gab 308 Punkte ab.')]
    switcher = CodeSwitcher([de, ar], p=1.0, seed=1)
    copies = code_switched_items(items, queries=switcher, passages=switcher)
    assert len(copies) == 1 and copies[0].id == '1' and copies[0].lang == 'cs-de+ar'
    assert copies[0].query != items[0].query and '308' in copies[0].positive
    ru = load_lexicon(LEXICONS / 'en-ru.txt')
    tiny = CodeSwitcher(Lexicon('en', 'ru', {'zeugma': ru.entries.get('zeugma', ('x',))}), p=1.0)
    with pytest.warns(UserWarning, match=r'cover only 0.0% of'):
        code_switched_items(items, queries=tiny, passages=None)


def test_acs_copies_train_in_the_same_trainer(tiny_model, tmp_path, lareqa_dir):
    import pyterrier_hybrid as ph
    english = ph.lareqa_items('mlqa-r', langs=['en'])[:200]
    switcher = CodeSwitcher([load_lexicon(LEXICONS / f'en-{lang}.1tok.txt') for lang in ('de', 'es', 'ar')], p=0.5)
    acs = code_switched_items(english, queries=switcher, passages=switcher, lang='cs')
    assert 0.3 < switcher.stats.ratio() < 0.7
    out = ph.train(tiny_model, {'acs': english + acs}, tmp_path / 'acs', strategy='hybrid', steps=2, batch_size=4)
    assert ph.read_training_record(out)['trained_languages'] == ['cs', 'en']


def test_lexicon_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    path = tmp_path / 'en-de.txt'
    path.write_bytes('house haus\r\nboat boot\n'.encode('utf-8-sig'))
    assert load_lexicon(path).entries == {'house': ('haus',), 'boat': ('boot',)}


def test_lexicon_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / 'en-de.txt'
    path.write_bytes(b'house haus\nboat boot\n' + 'fenêtre fenster\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'en-de.txt:3: not UTF-8'):
        load_lexicon(path)


def test_failed_muse_download_leaves_nothing(tmp_path, monkeypatch):
    def unreachable(url, timeout):
        raise urllib.error.URLError('offline')

    monkeypatch.setattr(code_switching.urllib.request, 'urlopen', unreachable)
    with pytest.raises(ConnectionError, match='cannot download the MUSE lexicon .*en-de.txt'):
        code_switching.muse_lexicon('en', 'de', tmp_path / 'muse')
    assert [p for p in tmp_path.rglob('*') if p.is_file()] == []


def test_muse_download_is_stored_and_read(tmp_path, monkeypatch):
    monkeypatch.setattr(code_switching.urllib.request, 'urlopen',
                        lambda url, timeout: io.BytesIO(b'house haus\nboat boot\n'))
    lexicon = code_switching.muse_lexicon('en', 'de', tmp_path)
    assert lexicon.entries == {'house': ('haus',), 'boat': ('boot',)}
    assert [p.name for p in tmp_path.iterdir()] == ['en-de.txt']
