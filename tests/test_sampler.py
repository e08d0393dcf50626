"""HybridBatchSampler's guarantees on synthetic parallel items and on the real XQuAD-R rows."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pyterrier_hybrid import HybridBatchSampler, ParallelItem, build_rows, lareqa_items


def items(n: int = 60, langs=('en', 'de', 'es'), prefix: str = 'i') -> list[ParallelItem]:
    """n items; every third one exists in English and German only."""
    out = []
    for i in range(n):
        for lang in (langs[:2] if i % 3 == 0 else langs):
            out.append(ParallelItem(f'{prefix}{i}', lang, f'q {i} {lang}', f'p {i} {lang}', (f'n {i} {lang}',)))
    return out


def sampler(rows, alpha=0.5, batch_size=8, seed=1):
    return HybridBatchSampler(list(range(len(rows))), batch_size=batch_size, drop_last=True, seed=seed,
                              rows=rows, alpha=alpha)


def batches(s: HybridBatchSampler, epochs: int) -> list[list[int]]:
    out = []
    for epoch in range(epochs):
        s.set_epoch(epoch)
        out.extend(s)
    return out


def test_batches_are_pure_and_never_hold_two_versions_of_an_item():
    rows = build_rows({'src': items()})
    kinds = []
    for batch in batches(sampler(rows), epochs=60):
        assert len(batch) == 8
        q, p = rows.query_lang[batch], rows.passage_lang[batch]
        assert len(set(rows.group[batch])) == 8, 'parallel copies of one item share a batch'
        if (q == p).any():
            assert (q == p).all() and len(set(q)) == 1, 'a monolingual batch mixes languages'
            kinds.append('mono')
        else:
            assert (q != p).all()
            kinds.append('cross')
    n, mono = len(kinds), kinds.count('mono')
    assert abs(mono / n - 0.5) <= 4 * np.sqrt(0.25 / n), f'{mono} of {n} batches monolingual'


@pytest.mark.parametrize('alpha', [0.0, 0.2, 1.0])
def test_alpha_fraction_within_binomial_tolerance(alpha):
    rows = build_rows({'src': items()})
    found = batches(sampler(rows, alpha=alpha), epochs=80)
    mono = np.mean([(rows.query_lang[b] == rows.passage_lang[b]).all() for b in found])
    assert abs(mono - alpha) <= 4 * np.sqrt(alpha * (1 - alpha) / len(found)) + 1e-12
    if alpha == 1.0:
        languages = {rows.query_lang[b[0]] for b in found}
        assert languages == {'en', 'de', 'es'}, 'the language of a mono batch is drawn from all languages'


def test_same_seed_same_batches():
    rows = build_rows({'src': items()})
    assert batches(sampler(rows, seed=3), 3) == batches(sampler(rows, seed=3), 3)
    assert batches(sampler(rows, seed=3), 3) != batches(sampler(rows, seed=4), 3)
    s = sampler(rows)
    assert len(s) == 60 // 8 and len(list(s)) == len(s)


def test_sources_are_not_mixed_and_are_drawn_by_size():
    rows = build_rows({'big': items(90, prefix='b'), 'small': items(30, prefix='s')})
    found = batches(sampler(rows, batch_size=6), epochs=40)
    sources = [set(rows.source[b]) for b in found]
    assert all(len(s) == 1 for s in sources)
    share = np.mean([s == {'big'} for s in sources])
    assert abs(share - 0.75) <= 4 * np.sqrt(0.75 * 0.25 / len(found))


def test_bad_input_fails_before_training():
    rows = build_rows({'src': items()})
    with pytest.raises(ValueError, match=r'alpha must lie in \[0, 1\]'):
        sampler(rows, alpha=1.5)
    english = build_rows({'src': [i for i in items() if i.lang == 'en']})
    with pytest.raises(ValueError, match='cross-lingual batches .* use alpha=1'):
        sampler(english, alpha=0.5)
    assert len(list(sampler(english, alpha=1.0))) == 7
    with pytest.raises(ValueError, match="need a language with at least 64 items in 'src'"):
        sampler(rows, alpha=0.5, batch_size=64)
    with pytest.raises(ValueError, match='no training items'):
        build_rows({'src': []})


def test_rows_cover_every_language_pair_with_a_negative_in_the_passage_language():
    rows = build_rows({'src': items(3)})
    # item 0: en, de -> 4 rows; items 1, 2: en, de, es -> 9 rows each
    assert len(rows) == 4 + 9 + 9
    for anchor, positive, negative, q, p in zip(rows.anchor, rows.positive, rows.negative, rows.query_lang,
                                                rows.passage_lang):
        assert anchor.endswith(q) and positive.endswith(p) and negative.endswith(p)
    no_negatives = [i._replace(negatives=()) if i.id == 'i1' else i for i in items(3)]
    rows = build_rows({'src': no_negatives})
    fallback = [n for n, g, p in zip(rows.negative, rows.anchor, rows.passage_lang) if g.startswith('q 1 ')]
    assert all(n.startswith('p ') and not n.startswith('p 1 ') for n in fallback)


def test_query_language_negatives_contrast_the_answer_with_a_sentence_in_the_query_language():
    rows = build_rows({'src': items(3)}, negative_language='query')
    for negative, anchor, q in zip(rows.negative, rows.anchor, rows.query_lang):
        item = anchor.split()[1]
        assert negative == f'n {item} {q}'  # the query's own version's negative, whatever the passage language
    assert any(q != p for q, p in zip(rows.query_lang, rows.passage_lang))
    with pytest.raises(ValueError, match="negative_language must be one of passage, query, mined, not 'doc'"):
        build_rows({'src': items(3)}, negative_language='doc')


@pytest.fixture(scope='module')
def xquad_rows(lareqa_dir):
    return build_rows({'lareqa/xquad-r': lareqa_items('xquad-r')})


def conflicts(rows, batch: list[int]) -> int:
    """Pairs of rows in a batch where one row's positive is the other's positive or hard negative."""
    return sum(rows.positive[a] in (rows.positive[b], rows.negative[b]) for a in batch for b in batch if a != b)


def test_xquad_r_questions_share_answers_so_unchecked_batches_hold_false_negatives(xquad_rows):
    english = [i for i in lareqa_items('xquad-r') if i.lang == 'en']
    answers = Counter(i.positive for i in english)
    assert len(english) == 1190 and sum(n for n in answers.values() if n > 1) == 656
    assert sum(any(n in answers for n in i.negatives) for i in english) == 1134  # a paragraph's other answers
    assert not any(p == n for p, n in zip(xquad_rows.positive, xquad_rows.negative))  # not even within a row
    rng = np.random.default_rng(0)
    mono_en = np.flatnonzero((xquad_rows.query_lang == 'en') & (xquad_rows.passage_lang == 'en'))
    unchecked = [rng.choice(mono_en, 32, replace=False).tolist() for _ in range(100)]
    assert sum(conflicts(xquad_rows, b) > 0 for b in unchecked) > 50, 'random batches would rarely conflict'


@pytest.mark.parametrize('alpha', [0.0, 0.5, 1.0])
def test_no_batch_of_real_xquad_r_holds_a_false_negative(xquad_rows, alpha):
    s = sampler(xquad_rows, alpha=alpha, batch_size=32)
    found = batches(s, epochs=4)
    assert len(found) == 4 * (1190 // 32)
    assert sum(conflicts(xquad_rows, b) for b in found) == 0
    assert all(len(set(xquad_rows.group[b])) == 32 for b in found)
    mono = np.mean([(xquad_rows.query_lang[b] == xquad_rows.passage_lang[b]).all() for b in found])
    assert abs(mono - alpha) <= 4 * np.sqrt(alpha * (1 - alpha) / len(found)) + 1e-12
    assert batches(sampler(xquad_rows, alpha=alpha, batch_size=32), epochs=2) == found[:2 * (1190 // 32)]


def test_pools_that_cannot_avoid_false_negatives_are_refused():
    shared = [ParallelItem(f'i{i}', 'en', f'q {i}', 'the one answer', (f'n {i}',)) for i in range(20)]
    with pytest.raises(ValueError, match=r"at least 8 items in 'src' \(with distinct positives\)"):
        sampler(build_rows({'src': shared}), alpha=1.0)
    # three answers in a ring, each the next one's hard negative: no two rows can share a batch
    clique = [ParallelItem(f'i{i}', 'en', f'q {i}', f'p {i}', (f'p {(i + 1) % 3}',)) for i in range(3)]
    with pytest.raises(ValueError, match='cannot fill a batch of 2 rows from 3 items'):
        list(sampler(build_rows({'src': clique}), alpha=1.0, batch_size=2))
