"""Mined cross-lingual hard negatives on real MLQA-R items: what is mined, reproducibility, the cache, bad input."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import pyterrier_hybrid as ph
from pyterrier_hybrid import build_rows, lareqa_items
from pyterrier_hybrid.training.mining import mine_negatives

LANGS = ('de', 'en', 'es')


@pytest.fixture(scope='module')
def sources(lareqa_dir) -> dict:
    """The first 40 MLQA-R items that exist in German, English and Spanish, in those three languages."""
    items = [i for i in lareqa_items('mlqa-r') if i.lang in LANGS]
    complete = sorted({i.id for i in items if i.lang == 'de'} & {i.id for i in items if i.lang == 'es'})[:40]
    return {'lareqa/mlqa-r': [i for i in items if i.id in set(complete)]}


class BiasedEncoder:
    """A deterministic encoder with a strong language direction, like an untrained multilingual one: a text's
    vector is a random direction seeded by its hash plus its language's axis, normalised."""

    def __init__(self, sources: dict, bias: float = 6.0):
        self.lang = {t: i.lang for items in sources.values() for i in items for t in (i.query, i.positive,
                                                                                      *i.negatives)}
        # without bias, a perfectly aligned encoder: a question and its answers (every language) share a vector
        self.item = {} if bias else {t: i.id for items in sources.values() for i in items for t in (i.query,
                                                                                                    i.positive)}
        self.bias, self.calls = bias, 0

    def __call__(self, texts: list[str], role: str) -> np.ndarray:
        self.calls += 1
        vectors = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(self.item.get(text, text).encode()).digest()[:8], 'little')
            vector = np.random.default_rng(seed).normal(size=16)
            vector[LANGS.index(self.lang[text])] += self.bias
            vectors.append(vector / np.linalg.norm(vector))
        return np.asarray(vectors)


def test_cross_lingual_rows_get_same_language_distractors_that_outrank_their_answer(sources):
    encode = BiasedEncoder(sources)
    rows = build_rows(sources, seed=3)
    mined = mine_negatives(rows, sources, encode, seed=3)
    lang_of = encode.lang
    own = {}
    for i in range(len(rows)):
        own.setdefault(rows.group[i], set()).add(rows.positive[i])
    changed = 0
    for i in range(len(rows)):
        if rows.query_lang[i] == rows.passage_lang[i]:
            assert mined.negative[i] == rows.negative[i], 'a monolingual row keeps its negative'
            continue
        query, answer, negative = encode([rows.anchor[i], rows.positive[i], mined.negative[i]], 'passage')
        if mined.negative[i] != rows.negative[i]:
            changed += 1
            assert lang_of[mined.negative[i]] == rows.query_lang[i], 'mined in the query language'
            assert query @ negative > query @ answer, 'a mined negative outranks the answer'
            assert mined.negative[i] not in own[rows.group[i]], "an item's own answer is never its negative"
    assert changed == int((rows.query_lang != rows.passage_lang).sum()), 'this biased an encoder errs on every row'
    assert mined.anchor == rows.anchor and mined.positive == rows.positive
    aligned = mine_negatives(rows, sources, BiasedEncoder(sources, bias=0.0), seed=3)
    assert aligned.negative == rows.negative, 'where the answer ranks first there is nothing to mine'


def test_mining_is_reproducible_under_its_seed_and_encodes_once(sources, tmp_path):
    encode = BiasedEncoder(sources)
    rows = build_rows(sources, seed=0)
    first = mine_negatives(rows, sources, encode, seed=1, cache=tmp_path, model_id='m')
    assert encode.calls == 2 and len(list(tmp_path.glob('*.npy'))) == 2  # queries and passages
    again = mine_negatives(rows, sources, encode, seed=1, cache=tmp_path, model_id='m')
    other = mine_negatives(rows, sources, encode, seed=2, cache=tmp_path, model_id='m')
    assert encode.calls == 2, 'every seed reuses the cached vectors'
    assert again.negative == first.negative and other.negative != first.negative
    mine_negatives(rows, sources, encode, seed=1, cache=tmp_path, model_id='another model')
    assert encode.calls == 4, 'another model is encoded anew'


def test_mining_refuses_data_it_cannot_mine(sources):
    german = {'de': [i for i in sources['lareqa/mlqa-r'] if i.lang == 'de']}
    with pytest.raises(ValueError, match=r'cross-lingual rows, and the training data has none \(languages: de\)'):
        mine_negatives(build_rows(german), german, BiasedEncoder(sources), seed=0)
    bare = {'bare': [i._replace(negatives=()) for i in sources['lareqa/mlqa-r']]}
    with pytest.raises(ValueError, match='has none \\(no item lists negatives\\)'):
        mine_negatives(build_rows(bare), bare, BiasedEncoder(sources), seed=0)


def test_a_mined_run_trains_and_records_its_recipe(tiny_model, tmp_path, lareqa_dir):
    run = ph.build_trainer(tiny_model, 'lareqa/mlqa-r', tmp_path / 'models' / 'mined', steps=2, batch_size=4,
                           negative_language='mined', languages=['de', 'es'])
    assert run.record['recipe']['negative_language'] == 'mined'
    assert len(list((tmp_path / 'models' / 'base-vectors').glob('*.npy'))) == 2
    plain = ph.build_trainer(tiny_model, 'lareqa/mlqa-r', tmp_path / 'models' / 'plain', steps=2, batch_size=4,
                             languages=['de', 'es'])
    assert run.record['data_digest'] != plain.record['data_digest'], 'the mined negatives are part of the data'
    run.trainer.train()
