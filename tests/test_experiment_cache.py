"""Experiment caches are keyed by content, and seeds multiply trained models: the runner on a tiny model and one
real XQuAD-R language pair (seconds, not the 132 settings)."""
from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest

import pyterrier_hybrid as ph
from pyterrier_hybrid.experiment import runner as experiment
from pyterrier_hybrid.experiment.config import load_experiment
from pyterrier_hybrid.training import trainer

EXPERIMENT = '''
    name: cache
    %(seeds)s
    models:
      base: {pretrained: %(base)s}
      hybrid:
        quantize: %(quantize)s
        train: {base: base, data: lareqa/mlqa-r, strategy: hybrid, steps: 2, batch_size: 4}
    datasets: [lareqa/xquad-r/de/en]
    measures: [AP, RankDistance]
    baseline: base
    run_depth: 3
'''


def experiment_file(tmp_path, base, quantize='false', seeds=''):
    path = tmp_path / 'exp.yaml'
    path.write_text(textwrap.dedent(EXPERIMENT % {'base': base, 'quantize': quantize, 'seeds': seeds}))
    return path


class Calls:
    """Counts the trainings and encodings a run does; with ``forbid``, any of them fails the test."""

    def __init__(self, monkeypatch, forbid: tuple[str, ...] = ()):
        self.train, self.encode = 0, 0
        train, encode = trainer.train, ph.HybridEncoder.encode

        def counted_train(*args, **kwargs):
            assert 'train' not in forbid, 'an unchanged model was trained again'
            self.train += 1
            return train(*args, **kwargs)

        def counted_encode(encoder, *args, **kwargs):
            assert 'encode' not in forbid, 'an unchanged encoding was computed again'
            self.encode += 1
            return encode(encoder, *args, **kwargs)

        monkeypatch.setattr(trainer, 'train', counted_train)
        monkeypatch.setattr(ph.HybridEncoder, 'encode', counted_encode)


def test_caches_follow_the_content_of_models_and_encodings(tiny_model, tmp_path, lareqa_dir, monkeypatch):
    base = shutil.copytree(tiny_model, tmp_path / 'base-checkpoint')
    path = experiment_file(tmp_path, base)
    spec = load_experiment(path)
    quiet = dict(log=lambda *a: None)
    with monkeypatch.context() as patch:
        calls = Calls(patch)
        first = ph.run_experiment(path, **quiet)
    assert calls.train == 1 and calls.encode > 0
    summary = pd.read_csv(first / 'summary.csv', index_col=[0, 1])

    with monkeypatch.context() as patch:  # nothing changed: nothing trained or encoded
        Calls(patch, forbid=('train', 'encode'))
        assert pd.read_csv(ph.run_experiment(path, **quiet) / 'summary.csv', index_col=[0, 1]).equals(summary)

    path = experiment_file(tmp_path, base, quantize='true')  # int8 is an encoding option: re-encode, not retrain
    with monkeypatch.context() as patch:
        calls = Calls(patch, forbid=('train',))
        ph.run_experiment(path, **quiet)
    assert calls.encode > 0
    hybrid = load_experiment(path).models['hybrid']
    assert hybrid.key == spec.models['hybrid'].key and hybrid.encoding_key == hybrid.key + '-int8'
    assert (spec.output / 'encodings' / hybrid.encoding_key).is_dir()

    from safetensors.torch import load_file, save_file
    weights = load_file(base / 'model.safetensors')
    name = next(iter(weights))
    save_file({**weights, name: weights[name] + 0.01}, base / 'model.safetensors')  # the same path, new weights
    with monkeypatch.context() as patch:
        calls = Calls(patch)
        ph.run_experiment(path, **quiet)
    assert calls.train == 1, 'a model trained from a changed base checkpoint is a new model'
    assert len(list((spec.output / 'models').glob('hybrid-seed42-*'))) == 2
    assert len(list((spec.output / 'encodings').glob('base-*'))) == 2


def test_model_keys_cover_base_and_data_not_encoding_options(tmp_path, tiny_model):
    (tmp_path / 'items.jsonl').write_text('{"id": "1", "lang": "en", "query": "q", "positive": "p"}\n')
    models = '''
        name: keys
        models:
          a: {pretrained: org/model-a}
          b: {pretrained: org/model-b}
          t: {train: {base: %s, data: %s}%s}
        datasets: [lareqa/xquad-r]
    '''
    def key(base='a', data='lareqa/mlqa-r', options=''):
        path = tmp_path / 'exp.yaml'
        path.write_text(textwrap.dedent(models % (base, data, options)))
        return load_experiment(path).models['t'].key

    reference = key()
    assert key(base='b') != reference, 'another base model is another trained model'
    assert key(data='lareqa/xquad-r') != reference and key(data='items.jsonl') != reference
    assert key(options=', batch_size: 8, quantize: true') == reference, 'encoding options do not retrain'
    before = key(data='items.jsonl')
    (tmp_path / 'items.jsonl').write_text('{"id": "2", "lang": "en", "query": "q", "positive": "p"}\n')
    assert key(data='items.jsonl') != before, 'training data counts by content'
    copy = shutil.copytree(tiny_model, tmp_path / 'copy')
    assert key(base=str(tiny_model)) == key(base=str(copy)), 'a local checkpoint counts by its files, not its path'
    for export in ('onnx/model.onnx', 'openvino/openvino_model.xml'):  # what encoding with a backend writes there
        (copy / export).parent.mkdir()
        (copy / export).write_text('exported')
    assert key(base=str(copy)) == key(base=str(tiny_model)), 'exports beside a checkpoint do not change the model'


def test_seeds_train_each_model_once_per_seed(tiny_model, tmp_path, lareqa_dir, monkeypatch):
    import pyterrier as pt
    bars = []

    class Bar:
        def __init__(self, total=None, desc='', **kwargs):
            self.total, self.desc, self.n = total, desc, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            pass

    monkeypatch.setattr(pt, 'tqdm', Bar)
    path = experiment_file(tmp_path, tiny_model, seeds='seeds: [1, 2]')
    spec = load_experiment(path)
    logged = []
    runner = experiment.ExperimentRunner(spec, log=logged.append)
    results = runner.run()

    assert logged[:2] == [f'[1/5] training hybrid seed 1: {runner.model_path(spec.models["hybrid"].seeded(1))}',
                          f'[2/5] training hybrid seed 2: {runner.model_path(spec.models["hybrid"].seeded(2))}']
    assert [line for line in logged if line.startswith('[')][2:] == [
        '[3/5] base on lareqa/xquad-r/de/en', '[4/5] hybrid seed 1 on lareqa/xquad-r/de/en',
        '[5/5] hybrid seed 2 on lareqa/xquad-r/de/en']
    encodings = [bar for bar in bars if bar.desc.startswith('encoding')]
    assert [bar.desc for bar in encodings] == [f'encoding {m} on lareqa/xquad-r/de/en'
                                               for m in ('base', 'hybrid seed 1', 'hybrid seed 2')]
    assert all(bar.n == bar.total > 2000 for bar in encodings), 'one bar over all documents and queries'

    for seed in (1, 2):
        assert trainer.read_recipe(runner.model_path(spec.models['hybrid'].seeded(seed))).seed == seed
    perquery = runner.evaluate()  # cached now
    assert list(perquery.columns) == experiment.PERQUERY_COLUMNS
    assert perquery.loc[perquery['name'] == 'base', 'seed'].isna().all()
    assert sorted(perquery.loc[perquery['name'] == 'hybrid', 'seed'].unique()) == [1, 2]
    by_seed = perquery[perquery['measure'] == 'AP'].groupby(['name', 'seed'], dropna=False)['qid'].count()
    assert by_seed.nunique() == 1 and len(by_seed) == 3, 'every model and seed has every query'
    assert perquery[['kind', 'query_lang', 'doc_lang']].drop_duplicates().values.tolist() == [['Cr', 'de', 'en']]
    runs = sorted(p.parent.name for p in (spec.output / 'runs-top3').glob('*/*.res.gz'))
    assert [r.split('-')[:2] for r in runs] == [['base', runs[0].split('-')[1]], ['hybrid', 'seed1'],
                                                ['hybrid', 'seed2']]
    run = pt.io.read_results(str(next((spec.output / 'runs-top3').glob('hybrid-seed1-*/*.res.gz'))))
    assert run.groupby('qid').size().max() == 3
    assert set(pd.read_csv(results / 'summary.csv')['name']) == {'base', 'hybrid'}


@pytest.mark.parametrize(('dataset_id', 'expected'), [
    ('lareqa/xquad-r/th/en', ('Cr', 'th', 'en')), ('lareqa/xquad-r/th/th', ('Mo', 'th', 'th')),
    ('lareqa/mlqa-r/de', ('Mul', 'de', 'all'))])
def test_lareqa_setting_ids_are_classified(tmp_path, dataset_id, expected, lareqa_dir):
    path = tmp_path / 'exp.yaml'
    path.write_text(f'name: x\nmodels: {{a: {{pretrained: m}}}}\ndatasets: [{dataset_id}]\n')
    pooled, settings = experiment._settings(load_experiment(path), dataset_id)
    assert pooled == dataset_id and [s[1:] for s in settings] == [expected]


def test_bias_removal_is_applied_to_the_stored_encoding(tiny_model, tmp_path, lareqa_dir, monkeypatch):
    path = tmp_path / 'exp.yaml'
    experiment_text = f'''
        name: debias
        models:
          raw: {{pretrained: {tiny_model}}}
          centred: {{model: raw, bias_removal: {{method: centre}}}}
        datasets: [lareqa/xquad-r/de]
        measures: [AP, RankDistance]
        run_depth: 0
    '''
    path.write_text(textwrap.dedent(experiment_text))
    spec = load_experiment(path)
    runner = experiment.ExperimentRunner(spec)
    values = runner.evaluate().pivot_table(index='qid', columns=['name', 'measure'], values='value')
    encodings = tmp_path / 'runs' / 'debias' / 'encodings'
    assert not values['centred'].equals(values['raw']), 'bias removal changed nothing'
    assert [p.name for p in encodings.iterdir()] == [spec.models['raw'].encoding_key]  # one encoding, shared
    # the stored vectors are LanguageBiasRemoval's, with the means fitted on the whole pooled encoding
    centred = spec.models['centred']
    folder = encodings / centred.encoding_key / 'lareqa__xquad-r__de' / centred.removal_key
    raw, debiased = ph.DenseIndex(folder.parent / 'docs.index'), ph.DenseIndex(folder / 'docs.index')
    langs = [docno.split('-')[0] for docno in raw.payload()[0]]
    removal = ph.LanguageBiasRemoval(ph.LanguageMeans.load(folder / 'language_means'))
    assert set(langs) == set(ph.lareqa.COLLECTIONS['xquad-r'])
    np.testing.assert_array_equal(debiased.payload()[1], removal.apply(raw.payload()[1], langs, 'doc'))
    assert debiased.metadata['bias_removal']['method'] == 'centre'
    Calls(monkeypatch, forbid=('encode',))
    again = experiment.ExperimentRunner(load_experiment(path)).evaluate()
    pd.testing.assert_frame_equal(again.pivot_table(index='qid', columns=['name', 'measure'], values='value'), values)
    path.write_text(textwrap.dedent(experiment_text.replace('method: centre', 'method: centre, k: 2')))
    with pytest.raises(ph.ExperimentError, match=r'models\.centred\.bias_removal.*does not project'):
        load_experiment(path)
