"""Experiment files: the validator on broken files, the runner end to end on a tiny model and real data."""
from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import pyterrier_hybrid as ph
from pyterrier_hybrid.experiment import runner as experiment
from pyterrier_hybrid.experiment.config import ExperimentError, load_experiment
from pyterrier_hybrid.training.trainer import load_training_data


def write(tmp_path, text: str, name: str = 'exp.yaml'):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


VALID = '''
    name: tiny
    models:
      base: {pretrained: %(model)s, batch_size: 256}  # encoding batches: a tiny model's time is overhead per batch
      hybrid:
        train: {base: base, data: lareqa/mlqa-r, strategy: hybrid, steps: 2, batch_size: 4}
        batch_size: 256
    datasets: [lareqa/xquad-r]
    languages: [de, en]
    settings: [Mo, Cr, Mul]
    measures: [AP, nDCG@10, RankDistance]
    baseline: base
    run_depth: 5
'''


# The common bad files (unknown keys, models, measures, languages, strategies; not YAML) are the faults table's
# YAML_CASES (tests/faults_cases.py), checked by test_faults through the same validator and the CLI; these are the rest.
@pytest.mark.parametrize('broken,expected', [
    ('name: x\nmodels:\n  a: {pretrained: m}\n  b: {pretrained: n}\ndatasets: [lareqa/xquad-r]\n'
     'comparisons:\n  - [b, a]\n  - [b, c]\n', r"exp.yaml:8: comparisons.1: unknown model 'c'; valid: a, b"),
    ('name: x\nmodels:\n  a: {pretrained: m}\n  b: {pretrained: n}\ndatasets: [lareqa/xquad-r]\n'
     'comparisons: [[a, [b]]]\n', r"comparisons.0: unknown model \['b'\]; valid: a, b"),
    ('name: x\nmodels:\n  a: {pretrained: m}\ndatasets: [lareqa/xquad-r]\nbaseline: [a]\n',
     r"exp.yaml:5: baseline: unknown model \['a'\]; valid: a"),
    ('name: x\nmodels:\n  a: {pretrained: m}\ndatasets: [lareqa/xquad-r]\ncomparisons: [[a, a]]\n',
     r"comparisons.0: a comparison is \[model, against\], two different models, not \['a', 'a'\]"),
    ('name: x\nmodels:\n  a: {pretrained: m}\n  a: {pretrained: n}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:4: models.a: duplicate model name 'a' \(lines 3 and 4\): YAML would keep only the last"),
    ('name: x\ndatasets: [lareqa/xquad-r]\nmodels: {a: {pretrained: m}}\ndatasets: [lareqa/mlqa-r]\n',
     r"exp.yaml:4: datasets: duplicate key 'datasets' \(lines 2 and 4\)"),
    ('name: x\nmodels:\n  ../a: {pretrained: m}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:3: models.../a: model name: '../a' would be written outside its folder"),
    ('name: ..\nmodels: {a: {pretrained: m}}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:1: name: '..' would be written outside its folder"),
    ('name: x\nmodels:\n  1: {pretrained: m}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:3: models.1: model name: a name is a non-empty string, not 1"),
    ('name: x\nmodels:\n  a: {pretrained: m}\n  b:\n    train:\n      base: a\n      data: lareqa/mlqa-r\n'
     '      batch_size: x\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:8: models.b.train.batch_size: expected an integer, not 'x'"),
    ('name: x\nmodels:\n  a: {pretrained: m, batch_size: x}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:3: models.a.batch_size: batch_size is a positive integer, not 'x'"),
    ('name: x\nmodels:\n  a: {train: {base: b, data: lareqa/mlqa-r}}\n  b: {train: {base: a, data: lareqa/mlqa-r}}\n'
     'datasets: [lareqa/xquad-r]\n', r"exp.yaml:3: models.a.train.base: cyclic base: a -> b -> a"),
    ('name: x\nmodels: {a: {pretrained: m}}\ndatasets: lareqa/xquad-r\n',
     r"exp.yaml:3: datasets: datasets is a list such as \[lareqa/xquad-r\], not 'lareqa/xquad-r'"),
    ('name: x\nmodels: {a: {pretrained: m}}\ndatasets: [lareqa/xquad-r]\nsettings: Mo\n',
     r"exp.yaml:4: settings: settings is a list such as \[Mo, Cr, Mul\] or \[\[de, en\]\], not 'Mo'"),
    ('name: x\nmodels: {a: {pretrained: m}}\ndatasets: [lareqa/xquad-r]\nmeasures: AP\n',
     r"exp.yaml:4: measures: measures is a list such as \[AP, nDCG@10\], not 'AP'"),
    ('name: x\nseeds: [1, one]\nmodels: {a: {pretrained: m}}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:2: seeds.1: seeds are distinct integers, not 'one'"),
    ('name: x\nseeds: [1, 2]\nmodels:\n  a: {pretrained: m}\n  b:\n    train: {base: a, data: lareqa/mlqa-r,\n'
     '            seed: 3}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:7: models.b.train.seed: give seeds \(top level\) or train.seed, not both"),
    ('name: x\nmodels:\n  a: {pretrained: m}\n  b: {train: {base: a, data: missing.jsonl}}\n'
     'datasets: [lareqa/xquad-r]\n',
     r"exp.yaml:4: models.b.train.data: training data 'missing.jsonl' is neither a JSONL file"),
    ('name: x\nmodels:\n  a: {pretrained: m}\n  b: {model: c}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:4: models.b.model: model names an entry with pretrained: or train:, not 'c'; valid: a$"),
    ('name: x\nmodels:\n  a: {pretrained: m}\n  b: {model: a}\n  c: {model: b}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:5: models.c.model: model names an entry with pretrained: or train:, not 'b'; valid: a$"),
    ('name: x\nmodels:\n  a: {pretrained: m}\n  b: {model: a, pretrained: m}\ndatasets: [lareqa/xquad-r]\n',
     r"exp.yaml:4: models.b: a model has exactly one of pretrained: \(a Hub id or path\), train: \{...\} or model:"),
])
def test_validator_reports_location_and_choices(tmp_path, broken, expected):
    with pytest.raises(ExperimentError, match=expected):
        load_experiment(write(tmp_path, broken))


def test_a_model_entry_uses_the_checkpoint_and_encoding_of_the_entry_it_names(tmp_path):
    spec = load_experiment(write(tmp_path, 'name: x\nseeds: [1, 2]\nmodels:\n  a: {pretrained: m}\n'
                                           '  b: {train: {base: a, data: lareqa/mlqa-r, steps: 2}}\n'
                                           '  b-centred: {model: b, bias_removal: {method: centre}}\n'
                                           '  b-int8: {model: b, quantize: true}\n  a-centred: {model: a}\n'
                                           'datasets: [lareqa/xquad-r]\n'))
    variants = {(v.name, v.seed): v for v in spec.variants()}
    assert set(variants) == {('a', None), ('a-centred', None), *((n, s) for n in ('b', 'b-centred', 'b-int8')
                                                                  for s in (1, 2))}
    assert variants['a-centred', None].key == variants['a', None].key
    for seed in (1, 2):
        b, centred, int8 = (variants[name, seed] for name in ('b', 'b-centred', 'b-int8'))
        assert b.trains and not centred.trains and not int8.trains  # trained once, as b
        assert centred.recipe == int8.recipe == b.recipe and centred.base == b.base
        assert centred.key == int8.key == b.key == f'b-seed{seed}-{b.digest()[:12]}'
        assert centred.encoding_key == b.encoding_key and int8.encoding_key == f'{b.key}-int8'
        assert centred.system_key == f'{b.encoding_key}-{centred.removal_key}'
    assert variants['b', 1].key != variants['b', 2].key


def test_unset_variables_are_named_with_their_line(tmp_path, monkeypatch):
    monkeypatch.delenv('PH_UNSET_MODELS', raising=False)
    monkeypatch.delenv('PH_UNSET_DATA', raising=False)
    monkeypatch.setenv('PH_SET', 'lareqa')
    path = write(tmp_path, 'name: x\nmodels:\n  a: {pretrained: "${PH_UNSET_MODELS}/m"}\n'
                           'datasets: [$PH_SET/xquad-r, $PH_UNSET_DATA/mlqa-r]\n')
    with pytest.raises(ExperimentError) as error:
        load_experiment(path)
    lines = str(error.value).splitlines()
    assert f"{path}:3: models.a.pretrained: environment variable 'PH_UNSET_MODELS' is not set " \
           f"(in '${{PH_UNSET_MODELS}}/m')" in lines
    assert f"{path}:4: datasets.1: environment variable 'PH_UNSET_DATA' is not set " \
           f"(in '$PH_UNSET_DATA/mlqa-r')" in lines
    assert not any('PH_SET' in line for line in lines)


def test_validator_collects_every_problem(tmp_path):
    path = write(tmp_path, 'name: x\nmodels: {a: {pretrained: m}}\ndatasets: [lareqa/xquad-r]\n'
                           'measures: [APP]\ncorrection: magic\nrun_depth: -1\n')
    with pytest.raises(ExperimentError) as error:
        load_experiment(path)
    assert len(str(error.value).splitlines()) == 3


def test_runner_end_to_end_with_cache_and_resume(tiny_model, tmp_path, lareqa_dir, monkeypatch):
    path = write(tmp_path, VALID % {'model': tiny_model})
    spec = load_experiment(path)
    assert spec.output == tmp_path / 'runs' / 'tiny'

    calls = {'n': 0}
    original = experiment.ExperimentRunner.perquery

    def crash_on_second_model(self, model, dataset_id):
        calls['n'] += 1
        if calls['n'] == 2:
            raise KeyboardInterrupt
        return original(self, model, dataset_id)

    with monkeypatch.context() as patch:
        patch.setattr(experiment.ExperimentRunner, 'perquery', crash_on_second_model)
        with pytest.raises(KeyboardInterrupt):
            ph.run_experiment(path, log=lambda *a: None)
    cached = list((spec.output / 'perquery').rglob('*.csv.gz'))
    assert len(cached) == 1, 'the first model was kept'
    runs = spec.output / 'runs-top5'  # the folder names the depth: a 5-deep run is no full ranking
    lost_run = next(runs.glob('base-*/*.res.gz'))
    lost_run.unlink()  # as if the interruption had hit while the runs were written

    results = ph.run_experiment(path, log=lambda *a: None)  # resumes: trains and evaluates the second model
    summary = pd.read_csv(results / 'summary.csv', index_col=[0, 1])
    assert set(summary.index.get_level_values('name')) == {'base', 'hybrid'}
    assert {'AP Mo', 'AP Cr', 'AP Mul', 'RankDistance Mul'} <= set(summary.columns)
    settings = pd.read_csv(results / 'settings.csv')
    assert len(settings) == 2 * (2 + 2 + 2)  # 2 models x (2 Mo + 2 Cr + 2 Mul) with de and en
    tests = pd.read_csv(results / 'significance.csv')
    assert set(tests['name']) == {'hybrid'} and {'p', 'p_corrected', 'significant'} <= set(tests.columns)
    assert (results / 'heatmap_base_lareqa_xquad-r.png').stat().st_size > 1000
    assert (results / 'rank_distance_lareqa_xquad-r.png').is_file()
    assert len(list(runs.glob('hybrid-seed42-*/*.res.gz'))) == 6
    assert lost_run.is_file(), 'the resumed run completed the runs of the cached model'
    assert (results / 'summary.md').read_text().count('|') > 10

    def must_not_run(*args, **kwargs):
        raise AssertionError('a cached experiment encoded or trained again')

    monkeypatch.setattr(ph.HybridEncoder, 'encode', must_not_run)
    monkeypatch.setattr('pyterrier_hybrid.training.trainer.train', must_not_run)
    again = ph.run_experiment(path, log=lambda *a: None)
    assert pd.read_csv(again / 'summary.csv', index_col=[0, 1]).equals(summary)


@pytest.mark.parametrize(('name', 'evaluated_on'), [
    ('paper_table.yaml', 'lareqa/xquad-r'), ('acs_vs_multilingual.yaml', 'lareqa/xquad-r'),
    ('acs_vs_multilingual_reverse.yaml', 'lareqa/mlqa-r'), ('bias_gap_reverse.yaml', 'lareqa/mlqa-r')])
def test_example_experiments_validate(name, evaluated_on, monkeypatch, offline_models, lareqa_dir):
    from conftest import SHARED  # noqa: F401  (the lexicon paths point into ../shared)
    monkeypatch.setenv('OFFLINE_MODELS_DIR', str(offline_models['multilingual-e5-small'].parent))
    spec = load_experiment(experiment_examples() / name)
    assert spec.baseline == 'mE5' and spec.datasets == [evaluated_on]
    assert spec.seeds == (None if name == 'paper_table.yaml' else [1, 2, 3])
    trained = sum(m.recipe is not None for m in spec.models.values())
    assert len(spec.variants()) == len(spec.models) + (0 if spec.seeds is None else 2 * trained)
    for model in spec.models.values():
        assert model.pretrained is None or (Path(model.pretrained) / 'config.json').is_file()


@pytest.mark.parametrize('file', ['bias_gap.yaml', 'bias_gap_combined.yaml'])
def test_bias_gap_studies_train_the_strategy_studys_models(monkeypatch, offline_models, lareqa_dir, file):
    """The bias-gap files repeat the strategy study's budget; equal keys hold them together."""
    monkeypatch.setenv('OFFLINE_MODELS_DIR', str(offline_models['multilingual-e5-small'].parent))
    study = load_experiment(experiment_examples() / 'strategy_study.yaml')
    debiased = load_experiment(experiment_examples() / file)
    assert debiased.seeds == study.seeds == [1, 2, 3]
    for name in ('mE5', 'hybrid'):
        assert [v.key for v in debiased.variants() if v.name == name] == \
            [v.key for v in study.variants() if v.name == name]


def test_centring_file_trains_only_the_strategy_studys_other_strategies(monkeypatch, offline_models, lareqa_dir):
    """examples/bias_gap_centring.yaml: X-X-mono and X-Y are the strategy study's models, the combination is
    bias_gap_combined's (same output folder), and every centred entry reuses its model's encoding."""
    monkeypatch.setenv('OFFLINE_MODELS_DIR', str(offline_models['multilingual-e5-small'].parent))
    study = load_experiment(experiment_examples() / 'strategy_study.yaml')
    combined = load_experiment(experiment_examples() / 'bias_gap_combined.yaml')
    centring = load_experiment(experiment_examples() / 'bias_gap_centring.yaml')
    assert centring.output == combined.output and centring.seeds == [1, 2, 3]
    new = {v.key for v in centring.variants()} - {v.key for v in combined.variants()}
    assert new == {v.key for v in study.variants() if v.name in ('xx-mono', 'xy')}
    for name in ('mE5', 'xx-mono', 'xy', 'hybrid-distil-qneg'):
        assert {v.key for v in centring.variants() if v.name == f'{name}-centred'} == \
            {v.key for v in centring.variants() if v.name == name}


def test_budget_probe_reuses_the_combined_studys_seed_one(monkeypatch, offline_models, lareqa_dir):
    """examples/bias_gap_budget.yaml trains only its 400-step model: the rest is bias_gap_combined's seed 1."""
    monkeypatch.setenv('OFFLINE_MODELS_DIR', str(offline_models['multilingual-e5-small'].parent))
    combined = load_experiment(experiment_examples() / 'bias_gap_combined.yaml')
    probe = load_experiment(experiment_examples() / 'bias_gap_budget.yaml')
    assert probe.output == combined.output and probe.seeds == [1]
    seed_one = {v.key for v in combined.variants() if v.recipe is None or v.recipe.seed == 1}
    new = [v for v in probe.variants() if v.key not in seed_one]
    assert [(v.name, v.recipe.steps) for v in new] == [('hybrid-distil-qneg-400', 400)]


def test_centred_entries_reuse_their_models_encodings(monkeypatch, offline_models, lareqa_dir):
    """A centred entry of examples/bias_gap.yaml costs no training: it shares its model's keys, not its values."""
    monkeypatch.setenv('OFFLINE_MODELS_DIR', str(offline_models['multilingual-e5-small'].parent))
    study = load_experiment(experiment_examples() / 'strategy_study.yaml')
    debiased = load_experiment(experiment_examples() / 'bias_gap.yaml')
    for name in ('hybrid', 'hybrid-mined'):
        centred = [v for v in debiased.variants() if v.name == f'{name}-centred']
        assert len(centred) == 3 and {v.key for v in centred} == {v.key for v in debiased.variants() if v.name == name}
        assert len({v.system_key for v in centred} | {v.system_key for v in study.variants()}) == 3 + len(
            study.variants()), 'a centred entry has per-query values of its own'


@pytest.mark.parametrize(('path', 'train', 'before', 'after'), [
    ('lexicons/en-de.txt', 'code_switching: {lexicons: [lexicons/en-de.txt]}', 'house\thaus\n',
     'house\thaus\nbig\tgroß\n'),
    ('teacher/config.json', 'distillation: 1.0, teacher: teacher', '{"hidden_size": 32}', '{"hidden_size": 128}'),
])
def test_training_files_count_by_content_wherever_the_experiment_is_read_from(tmp_path, monkeypatch, path, train,
                                                                              before, after):
    """A lexicon or a distillation teacher is found relative to the file and keys the model by its content."""
    (tmp_path / path).parent.mkdir()
    (tmp_path / path).write_text(before)
    write(tmp_path, f'''
        name: keys
        models:
          base: {{pretrained: some/model}}
          trained: {{train: {{base: base, data: lareqa/mlqa-r, {train}}}}}
        datasets: [lareqa/xquad-r]
    ''')
    model = load_experiment(tmp_path / 'exp.yaml').models['trained']
    assert str(tmp_path / path.split('/')[0]) in json.dumps(model.recipe.to_dict()), 'resolved next to the file'
    key = model.key  # keys read the files when asked
    monkeypatch.chdir(tmp_path.parent)
    assert load_experiment(Path(tmp_path.name) / 'exp.yaml').models['trained'].key == key
    (tmp_path / path).write_text(after)
    assert load_experiment(tmp_path / 'exp.yaml').models['trained'].key != key, 'new content, a new model'


def experiment_examples() -> Path:
    return Path(__file__).resolve().parents[1] / 'examples'


def test_code_switched_training_data_from_an_experiment_file(tmp_path, lareqa_dir, caplog):
    from conftest import SHARED
    lexicons = SHARED / 'data' / 'lexicons'
    path = write(tmp_path, f'''
        name: acs
        models:
          base: {{pretrained: some/model}}
          acs:
            train:
              base: base
              data: lareqa/mlqa-r
              code_switching: {{lexicons: [{lexicons}/en-de.txt, {lexicons}/en-hi.txt], p: 0.5, side: query}}
        datasets: [lareqa/mlqa-r]
    ''')
    model = load_experiment(path).models['acs']
    with caplog.at_level('INFO', logger='pyterrier_hybrid'):
        data = load_training_data(model.data, model.recipe.code_switching)
    report = re.fullmatch(r'code-switched 1148 items: lexicon coverage (\S+)% of words, switched (\S+)% of known '
                          r'words \(de (\S+)%, hi (\S+)%\)', caplog.messages[-1])
    coverage, switched, de, hi = map(float, report.groups())  # ML-CS: p = 0.5 shared by the two lexicons
    assert coverage > 50 and 45 < switched < 55 and abs(de + hi - switched) < 0.2 and min(de, hi) > 10
    items = data['lareqa/mlqa-r']
    english = [i for i in items if i.lang == 'en']
    switched = [i for i in items if i.lang == 'cs']
    assert len(english) == len(switched) == 1148
    assert all(s.positive == e.positive for s, e in zip(switched, english)), 'side: query leaves passages alone'
    assert sum(s.query != e.query for s, e in zip(switched, english)) > 1000


def test_code_switched_copies_can_join_the_real_translations(tmp_path, lareqa_dir):
    from conftest import SHARED
    lexicons = SHARED / 'data' / 'lexicons'
    path = write(tmp_path, f'''
        name: acs
        models:
          base: {{pretrained: some/model}}
          hybrid+acs:
            train:
              base: base
              data: lareqa/mlqa-r
              code_switching: {{lexicons: [{lexicons}/en-el.txt, {lexicons}/en-ru.txt], keep_translations: true}}
        datasets: [lareqa/xquad-r]
    ''')
    model = load_experiment(path).models['hybrid+acs']
    items = load_training_data(model.data, model.recipe.code_switching)['lareqa/mlqa-r']
    real = load_training_data(model.data)['lareqa/mlqa-r']  # MLQA-R: 1148 English items, fewer translations
    assert len(real) > 4000 and {i.lang for i in real} == {'ar', 'de', 'en', 'es', 'hi', 'vi', 'zh'}
    assert items[:len(real)] == real
    assert [i.lang for i in items[len(real):]] == ['cs'] * 1148
    alone = load_training_data(model.data, dataclasses.replace(model.recipe.code_switching, keep_translations=False))
    assert {i.lang for i in alone['lareqa/mlqa-r']} == {'en', 'cs'}
