"""Artificial code-switching (ACS, arXiv 2305.05295): replace words by lexicon translations with probability p.

Lexicons are MUSE-format files, one ``source target`` pair per line (tab-separated when the target has
several tokens), several targets per source allowed; :func:`load_lexicon` reads one from a path and
:func:`muse_lexicon` fetches a MUSE dictionary by language pair when online.

:class:`CodeSwitcher` tokenises a text into words, numbers, punctuation and whitespace, and replaces each word
the lexicons know (looked up lower-cased) by one of its translations with probability ``p``, keeping the
word's capitalisation; numbers, punctuation and spacing are kept. With one lexicon it is bilingual
code-switching (BL-CS: e.g. queries towards German, passages towards Spanish, with two switchers); with several
it is multilingual code-switching (ML-CS): each replaced word's language is drawn uniformly from the lexicons
that know it. The output depends only on the seed and the text, so switching is reproducible in any order and
in parallel.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import regex

from pyterrier_hybrid.atomic import write_atomically

from .items import ParallelItem

MUSE_URL = 'https://dl.fbaipublicfiles.com/arrival/dictionaries/{src}-{tgt}.txt'
_TOKEN = regex.compile(r"(?P<word>[\p{L}\p{M}]+(?:['’\-][\p{L}\p{M}]+)*)|\p{N}+(?:[.,]\p{N}+)*|\s+|.", regex.V1)
_PAIR_NAME = re.compile(r'(?P<src>[a-z]{2,3})-(?P<tgt>[a-z]{2,3})\b')


class Lexicon(NamedTuple):
    """Bilingual word translations: ``entries[source word] = (targets...)``."""
    src: str
    tgt: str
    entries: dict[str, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.entries)


def lexicon_pair(path: str | os.PathLike) -> tuple[str, str]:
    """The language pair ``(src, tgt)`` a lexicon file's name gives (``en-de.txt``), without reading it.

    Raises:
        ValueError: when the name gives no pair.
    """
    match = _PAIR_NAME.match(Path(path).name)
    if not match:
        raise ValueError(f'cannot tell the language pair of {path} from its name; pass src= and tgt=')
    return match['src'], match['tgt']


def load_lexicon(path: str | os.PathLike, src: str | None = None, tgt: str | None = None) -> Lexicon:
    """Read a MUSE-format lexicon; the language pair defaults to the file name (:func:`lexicon_pair`).

    Raises:
        ValueError: naming the file and line of a malformed line or of bytes that are not UTF-8, or when the
            pair cannot be inferred.
    """
    path = Path(path)
    if src is None or tgt is None:
        named_src, named_tgt = lexicon_pair(path)
        src, tgt = src or named_src, tgt or named_tgt
    entries: dict[str, list[str]] = {}
    data = path.read_bytes()
    try:
        text = data.decode('utf-8-sig')  # -sig: a byte-order mark is not part of the first word
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b'\n') + 1
        raise ValueError(f'{path}:{line}: not UTF-8 ({error.reason} at byte {error.start}); MUSE lexicons are '
                         'UTF-8 text') from None
    for number, line in enumerate(io.StringIO(text, newline=None), 1):
        line = line.rstrip('\n')
        if not line.strip():
            continue
        source, sep, target = line.partition('\t') if '\t' in line else line.partition(' ')
        if not sep or not source.strip() or not target.strip() or (' ' in source.strip()):
            raise ValueError(f'{path}:{number}: expected "source target" (tab-separated for multi-word '
                             f'targets), got {line!r}')
        entries.setdefault(source.strip().lower(), []).append(target.strip())
    if not entries:
        raise ValueError(f'{path} holds no translation pairs')
    return Lexicon(src, tgt, {k: tuple(dict.fromkeys(v)) for k, v in entries.items()})


def muse_lexicon(src: str, tgt: str, cache_dir: str | os.PathLike | None = None) -> Lexicon:
    """The MUSE ground-truth dictionary ``src-tgt``, downloaded once (atomically) into ``cache_dir``."""
    import ir_datasets
    cache = Path(cache_dir) if cache_dir else ir_datasets.util.home_path() / 'muse'
    target = cache / f'{src}-{tgt}.txt'
    if not target.is_file():
        url = MUSE_URL.format(src=src, tgt=tgt)

        def fetch(tmp: Path) -> None:
            with open(tmp, 'wb') as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out, 1 << 20)

        try:
            write_atomically(target, fetch)
        except urllib.error.URLError as error:
            raise ConnectionError(f'cannot download the MUSE lexicon {url} ({error.reason}); offline, pass a '
                                  'local MUSE-format file to load_lexicon') from error
    return load_lexicon(target, src, tgt)


class SwitchStats(Counter):
    """Counts per target language of switched words, and of switchable and all words seen."""

    def ratio(self, lang: str | None = None) -> float:
        """Replaced / switchable words (for one target language, or overall)."""
        switched = self[f'switched:{lang}'] if lang else sum(v for k, v in self.items() if k.startswith('switched:'))
        return switched / self['switchable'] if self['switchable'] else 0.0

    def coverage(self) -> float:
        """Share of words that some lexicon knows."""
        return self['switchable'] / self['words'] if self['words'] else 0.0


def _match_case(source: str, target: str) -> str:
    if len(source) > 1 and source.isupper():
        return target.upper()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


class CodeSwitcher:
    """Replaces each word known to the lexicons with probability ``p``; see the module docstring.

    Args:
        lexicons: one (BL-CS) or several (ML-CS) lexicons with the same source language.
        p: switching probability per switchable word (the paper uses 0.25 to 1.0).
        seed: with the text, determines every choice.
    """

    def __init__(self, lexicons: Lexicon | Sequence[Lexicon], p: float = 0.5, seed: int = 0):
        self.lexicons = [lexicons] if isinstance(lexicons, Lexicon) else list(lexicons)
        if not self.lexicons:
            raise ValueError('CodeSwitcher needs at least one lexicon')
        if len({lex.src for lex in self.lexicons}) > 1:
            raise ValueError(f'lexicons switch from different languages: {[lex.src for lex in self.lexicons]}')
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'p must lie in [0, 1], not {p}')
        self.p, self.seed = p, seed
        self.stats = SwitchStats()

    @property
    def target_langs(self) -> list[str]:
        return [lex.tgt for lex in self.lexicons]

    def __call__(self, text: str) -> str:
        digest = hashlib.blake2b(f'{self.seed}\0{text}'.encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, 'little'))
        out = []
        for match in _TOKEN.finditer(text):
            token = match.group()
            if match['word'] is None:
                out.append(token)
                continue
            self.stats['words'] += 1
            key = token.lower()
            knowing = [lex for lex in self.lexicons if key in lex.entries]
            if not knowing:
                out.append(token)
                continue
            self.stats['switchable'] += 1
            if rng.random() >= self.p:
                out.append(token)
                continue
            lexicon = knowing[rng.integers(len(knowing))]
            targets = lexicon.entries[key]
            out.append(_match_case(token, targets[rng.integers(len(targets))]))
            self.stats[f'switched:{lexicon.tgt}'] += 1
        return ''.join(out)

    def warn_if_low_coverage(self, threshold: float = 0.2) -> None:
        """Warn when the lexicons know few of the words switched so far (switching then changes little)."""
        if self.stats['words'] and self.stats.coverage() < threshold:
            warnings.warn(f'lexicons {", ".join(f"{lex.src}-{lex.tgt}" for lex in self.lexicons)} cover only '
                          f'{self.stats.coverage():.1%} of {self.stats["words"]} words', stacklevel=2)

    def __repr__(self) -> str:
        pairs = ', '.join(f'{lex.src}-{lex.tgt}' for lex in self.lexicons)
        return f'CodeSwitcher([{pairs}], p={self.p}, seed={self.seed})'


def code_switched_items(items: Iterable[ParallelItem], queries: CodeSwitcher | None,
                        passages: CodeSwitcher | None, lang: str | None = None,
                        source_lang: str = 'en') -> list[ParallelItem]:
    """ACS copies of the ``source_lang`` items: queries and/or passages switched.

    Each copy keeps its item's id, so it is one more parallel version of the item: with ``lang='cs'`` it can
    stand next to real translations in hybrid batches (real translations plus ACS copies), or alone as the
    ACS training set (English QA data in, code-switched pairs out).
    """
    if queries is None and passages is None:
        raise ValueError('switch queries, passages or both')
    tag = lang or 'cs-' + '+'.join(dict.fromkeys((queries or passages).target_langs))
    switched = []
    for item in items:
        if item.lang != source_lang:
            continue
        switched.append(ParallelItem(
            item.id, tag, queries(item.query) if queries else item.query,
            passages(item.positive) if passages else item.positive,
            tuple(passages(n) for n in item.negatives) if passages else item.negatives))
    for switcher in {id(s): s for s in (queries, passages) if s is not None}.values():
        switcher.warn_if_low_coverage()
    return switched
