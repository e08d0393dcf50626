"""Multilingual distillation beside InfoNCE, on a tiny model and real MLQA-R items: targets, effect, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import pyterrier_hybrid as ph
from pyterrier_hybrid import build_rows, lareqa_items
from pyterrier_hybrid.training.distillation import teacher_targets


@pytest.fixture(scope='module')
def sources(lareqa_dir) -> dict:
    """40 MLQA-R items in German and English, and 10 more in German only."""
    items = [i for i in lareqa_items('mlqa-r') if i.lang in ('de', 'en')]
    german = sorted({i.id for i in items if i.lang == 'de'})
    both = set(german[:40]) & {i.id for i in items if i.lang == 'en'}
    alone = set(german[40:50])
    return {'mlqa': [i for i in items if i.id in both or (i.id in alone and i.lang == 'de')]}


def test_every_version_targets_the_teachers_vector_of_its_english_version(sources, tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer
    teacher = SentenceTransformer(str(tiny_model), device='cpu')
    rows = build_rows(sources)
    queries, answers, labels = teacher_targets(rows, teacher, 'tiny', tmp_path)
    english = {int(rows.group[i]): (rows.anchor[i], rows.positive[i]) for i in range(len(rows))
               if rows.query_lang[i] == rows.passage_lang[i] == 'en'}
    expected_q = teacher.encode([english.get(int(g), (a, None))[0] for g, a in zip(rows.group, rows.anchor)],
                                prompt_name='query')
    expected_a = teacher.encode([english.get(int(g), (None, p))[1] for g, p in zip(rows.group, rows.positive)],
                                prompt_name='passage')
    np.testing.assert_allclose(queries[labels[:, 0]], expected_q, atol=1e-5)
    np.testing.assert_allclose(answers[labels[:, 1]], expected_a, atol=1e-5)
    german_only = [i for i in range(len(rows)) if int(rows.group[i]) not in english]
    assert german_only, 'items without an English version are their own targets'
    assert len(list(tmp_path.glob('*.npy'))) == 2
    again = teacher_targets(rows, teacher, 'tiny', tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(again, (queries, answers, labels)))


def translation_pairs(sources) -> list[tuple[str, str]]:
    """(German question, its English version) for every item in both languages."""
    by_id = {(i.id, i.lang): i.query for i in sources['mlqa']}
    return [(q, by_id[(item_id, 'en')]) for (item_id, lang), q in by_id.items()
            if lang == 'de' and (item_id, 'en') in by_id]


def test_distillation_pulls_translations_to_the_teachers_english_vectors(sources, tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer
    pairs = translation_pairs(sources)
    target = SentenceTransformer(str(tiny_model), device='cpu').encode([e for _, e in pairs], prompt_name='query')

    def distance(path) -> float:  # mean squared distance of German questions to the base model's English ones
        german = SentenceTransformer(str(path), device='cpu').encode([g for g, _ in pairs], prompt_name='query')
        return float(((german - target) ** 2).sum(-1).mean())

    options = dict(steps=12, batch_size=8, learning_rate=1e-3, seed=3)
    plain = ph.train(tiny_model, sources, tmp_path / 'plain', **options)
    distilled = ph.train(tiny_model, sources, tmp_path / 'models' / 'distilled', distillation=5.0, **options)
    assert (tmp_path / 'models' / 'base-vectors').is_dir(), "the teacher's vectors are cached beside the model"
    assert ph.read_recipe(distilled).distillation == 5.0
    before, after, without = distance(tiny_model), distance(distilled), distance(plain)  # 0.028, 0.023, 0.065
    assert after < before < without and after < 0.5 * without


@pytest.mark.parametrize('kwargs,message', [
    ({'distillation': -1.0}, 'distillation: is a weight >= 0, not -1.0'),
    ({'teacher': 'some/model'}, 'teacher: is the distillation teacher; set distillation > 0'),
    ({'distillation': 1.0, 'mini_batch_size': 2}, 'does not combine with GradCache'),
])
def test_bad_distillation_recipes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ph.Recipe(**kwargs)


def test_a_teacher_of_another_dimension_is_refused_before_training(sources, tiny_model, offline_models, tmp_path):
    minilm = offline_models['all-MiniLM-L6-v2']
    with pytest.raises(ValueError, match=r'teacher .*all-MiniLM-L6-v2 gives 384-dimensional vectors and the '
                                         r'student 32-dimensional'):
        ph.train(tiny_model, sources, tmp_path / 'out', steps=2, batch_size=4, distillation=1.0, teacher=str(minilm))
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'out.checkpoints').exists()
