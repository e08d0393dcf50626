"""Declarative experiments: one YAML file names models, data sets, settings and measures; one call trains what
must be trained, encodes each corpus once per model, evaluates, compares and draws, reusing what is on disk.

.. code-block:: yaml

    name: paper-table
    output: runs/paper-table          # relative to this file; default runs/<name>; $VARS are expanded
    models:
      mE5: {pretrained: intfloat/multilingual-e5-small}
      hybrid:
        train: {base: mE5, data: lareqa/mlqa-r, strategy: hybrid, alpha: 0.5, steps: 1000, batch_size: 32}
      acs:
        train: {base: mE5, data: lareqa/mlqa-r, strategy: xx-mono,
                code_switching: {lexicons: [lexicons/en-de.txt, lexicons/en-ar.txt], p: 0.5}}
    datasets: [lareqa/xquad-r]        # lareqa/xquad-r, lareqa/mlqa-r, miracl/<lang>/dev, any ir_datasets id
    settings: [Mo, Cr, Mul]           # and/or language pairs such as [de, en] (LAReQA only)
    languages: [de, en, zh]           # optional: restrict the LAReQA languages
    measures: [AP, nDCG@10, R@100, RankDistance]
    baseline: mE5                     # optional: paired t-tests against it
    correction: holm                  # multiple-testing correction (statsmodels name) or none
    run_depth: 100                    # documents per query in the saved TREC runs (0: none)
    x-budget: &budget {steps: 60}     # top-level keys starting with x- are ignored: a place for YAML anchors

The output folder holds ``models/`` (trained checkpoints), ``encodings/`` (one pooled encoding per model and
data set), ``perquery/`` (per-query values per model and data set), ``runs/`` (TREC runs) and ``results/``:
per-setting tables, the Mo / Cr / Mul summary, significance tests (CSV and Markdown), AP heatmaps per language
pair and a rank-distance chart per query language (PNG). Everything is written atomically and keyed by the
model's definition, so a second run does no work and an interrupted one continues where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ir_datasets
import ir_measures
import pandas as pd
import yaml

from . import lareqa
from .atomic import write_atomically
from .evaluation import KINDS, Setting, lareqa_settings, macro_average_perquery, paired_tests
from .measures import RankDistance
from .training import STRATEGIES

TRAIN_KEYS = {'base', 'data', 'strategy', 'alpha', 'steps', 'batch_size', 'learning_rate', 'temperature',
              'max_length', 'freeze_embeddings', 'negative_language', 'seed', 'languages', 'code_switching'}
CODE_SWITCHING_KEYS = {'lexicons', 'p', 'seed', 'side'}
MODEL_KEYS = {'pretrained', 'train', 'batch_size', 'quantize'}
TOP_KEYS = {'name', 'output', 'models', 'datasets', 'settings', 'languages', 'measures', 'baseline', 'correction',
            'run_depth'}
CORRECTIONS = ('holm', 'bonferroni', 'fdr_bh', 'sidak', 'none')


class ExperimentError(ValueError):
    """An experiment file that cannot run; the message lists every problem with its line."""


@dataclass
class ModelSpec:
    name: str
    pretrained: str | None = None
    train: dict | None = None
    batch_size: int = 32
    quantize: bool = False

    @property
    def key(self) -> str:
        """The model's cache key: its name and a digest of its definition.

        Lexicons count by their contents, not their paths, so the key does not depend on the directory the
        experiment is run from, and an edited lexicon is a new model."""
        definition = asdict(self)
        switching = (self.train or {}).get('code_switching')
        if switching:
            definition['train']['code_switching'] = {**switching,
                                                     'lexicons': [_file_digest(p) for p in switching['lexicons']]}
        digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:10]
        return f'{self.name}-{digest}'


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class ExperimentSpec:
    name: str
    output: Path
    models: dict[str, ModelSpec]
    datasets: list[str]
    settings: list = field(default_factory=lambda: list(KINDS))
    languages: list[str] | None = None
    measures: list = field(default_factory=list)
    baseline: str | None = None
    correction: str = 'holm'
    run_depth: int = 100


# --- reading and validating ---------------------------------------------------------------------------------------

class _Located:
    """Line numbers of the keys and items of a YAML document, by path."""

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        node = yaml.compose(text)
        if node is not None:
            self._walk(node, ())

    def _walk(self, node, path: tuple) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[path + (key.value,)] = key.start_mark.line + 1
                self._walk(value, path + (key.value,))
                self.lines[path + (key.value,)] = key.start_mark.line + 1  # the key's line, not its value's
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,))

    def at(self, path: tuple) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


def parse_measure(name: Any):
    """An ir_measures measure or RankDistance from its name (``AP``, ``nDCG@10``, ``RankDistance``)."""
    if not isinstance(name, str):
        raise ValueError(f'expected a measure name, got {name!r}')
    if name == 'RankDistance':
        return RankDistance
    try:
        return ir_measures.parse_measure(name)
    except (ValueError, NameError, SyntaxError, TypeError) as error:
        raise ValueError(f'unknown measure {name!r}; e.g. AP, nDCG@10, R@100, RR@10, RankDistance') from error


def load_experiment(path: str | os.PathLike) -> ExperimentSpec:
    """Read and validate an experiment file; every problem is reported with its line and the valid choices."""
    path = Path(path)
    text = path.read_text(encoding='utf-8')
    try:
        raw = _expand_vars(yaml.safe_load(text))
        located = _Located(text)
    except yaml.YAMLError as error:
        raise ExperimentError(f'{path}: not valid YAML: {error}') from error
    problems: list[tuple[tuple, str]] = []
    spec = _validate(raw, problems, path.parent)
    if problems:
        raise ExperimentError('\n'.join(f'{path}:{located.at(where)}: {".".join(map(str, where)) or "top"}: '
                                        f'{message}' for where, message in problems))
    return spec


def _expand_vars(value: Any) -> Any:
    """``$VAR`` / ``${VAR}`` in string values, so one file serves machines with different paths."""
    if isinstance(value, str):
        return os.path.expandvars(value)
    if isinstance(value, list):
        return [_expand_vars(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand_vars(v) for k, v in value.items()}
    return value


def _unknown_keys(value: Mapping, valid: set, where: tuple, problems: list) -> None:
    for key in value:
        if key not in valid:
            problems.append((where + (key,), f'unknown key {key!r}; valid: {", ".join(sorted(valid))}'))


def _validate(raw: Any, problems: list, base: Path) -> ExperimentSpec | None:
    if not isinstance(raw, dict):
        problems.append(((), 'an experiment file is a mapping with name, models, datasets ...'))
        return None
    _unknown_keys({k: v for k, v in raw.items() if not str(k).startswith('x-')}, TOP_KEYS, (), problems)
    for key in ('name', 'models', 'datasets'):
        if key not in raw:
            problems.append(((), f'missing required key {key!r}'))
    models = {}
    raw_models = raw.get('models') or {}
    if not isinstance(raw_models, dict):
        problems.append((('models',), 'models is a mapping of name -> {pretrained: ...} or {train: ...}'))
        raw_models = {}
    for name, model in raw_models.items():
        models[name] = _validate_model(name, model, raw_models, problems, base)
    datasets = raw.get('datasets') or []
    for i, dataset_id in enumerate(datasets if isinstance(datasets, list) else []):
        try:
            ir_datasets.load(dataset_id)
        except (KeyError, TypeError) as error:
            message = error.args[0] if error.args else error
            problems.append((('datasets', i), f'unknown data set {dataset_id!r}: {message}'))
    langs = raw.get('languages')
    valid_langs = sorted(set().union(*lareqa.COLLECTIONS.values()))
    for i, lang in enumerate(langs or []):
        if lang not in valid_langs:
            problems.append((('languages', i), f'unknown language {lang!r}; valid: {", ".join(valid_langs)}'))
    settings = raw.get('settings', list(KINDS))
    for i, setting in enumerate(settings or []):
        pair = isinstance(setting, list) and len(setting) == 2 and all(s in valid_langs for s in setting)
        if setting not in KINDS and not pair:
            problems.append((('settings', i), f'unknown setting {setting!r}; valid: {", ".join(KINDS)} or a '
                                              f'[query_lang, doc_lang] pair of {", ".join(valid_langs)}'))
    measures = []
    for i, name in enumerate(raw.get('measures', ['AP', 'nDCG@10', 'R@100', 'RankDistance'])):
        try:
            measures.append(parse_measure(name))
        except ValueError as error:
            problems.append((('measures', i), str(error)))
    baseline = raw.get('baseline')
    if baseline is not None and baseline not in raw_models:
        problems.append((('baseline',), f'unknown model {baseline!r}; valid: {", ".join(raw_models)}'))
    correction = raw.get('correction', 'holm')
    if correction not in CORRECTIONS:
        problems.append((('correction',), f'unknown correction {correction!r}; valid: {", ".join(CORRECTIONS)}'))
    run_depth = raw.get('run_depth', 100)
    if not isinstance(run_depth, int) or run_depth < 0:
        problems.append((('run_depth',), f'run_depth is a number of documents >= 0, not {run_depth!r}'))
    if problems:
        return None
    output = Path(raw.get('output') or f'runs/{raw["name"]}')
    return ExperimentSpec(name=raw['name'], output=output if output.is_absolute() else base / output,
                          models=models, datasets=datasets, settings=settings, languages=langs, measures=measures,
                          baseline=baseline, correction=correction, run_depth=run_depth)


def _validate_model(name: str, model: Any, all_models: Mapping, problems: list, base: Path) -> ModelSpec | None:
    where = ('models', name)
    if not isinstance(model, dict) or ('pretrained' in model) == ('train' in model):
        problems.append((where, 'a model has exactly one of pretrained: (a Hub id or path) or train: {...}'))
        return None
    _unknown_keys(model, MODEL_KEYS, where, problems)
    train = model.get('train')
    if train is not None:
        if not isinstance(train, dict):
            problems.append((where + ('train',), 'train is a mapping (base, data, strategy, ...)'))
            return None
        _unknown_keys(train, TRAIN_KEYS, where + ('train',), problems)
        for key in ('base', 'data'):
            if key not in train:
                problems.append((where + ('train',), f'missing required key {key!r}'))
        if train.get('strategy', 'hybrid') not in STRATEGIES:
            problems.append((where + ('train', 'strategy'),
                             f'unknown strategy {train["strategy"]!r}; valid: {", ".join(STRATEGIES)}'))
        alpha = train.get('alpha')
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            problems.append((where + ('train', 'alpha'), f'alpha must lie in [0, 1], not {alpha!r}'))
        if train.get('base') == name:
            problems.append((where + ('train', 'base'), 'a model cannot be trained from itself'))
        switching = train.get('code_switching')
        if switching is not None:
            if not isinstance(switching, dict) or not switching.get('lexicons'):
                problems.append((where + ('train', 'code_switching'), 'code_switching needs lexicons: [paths]'))
            else:
                _unknown_keys(switching, CODE_SWITCHING_KEYS, where + ('train', 'code_switching'), problems)
                for i, lexicon in enumerate(switching['lexicons']):
                    if not (base / lexicon).is_file():
                        problems.append((where + ('train', 'code_switching', 'lexicons', i),
                                         f'lexicon file {base / lexicon} does not exist'))
                train = {**train, 'code_switching': {**switching,
                                                     'lexicons': [str(base / x) for x in switching['lexicons']]}}
    return ModelSpec(name=name, pretrained=model.get('pretrained'), train=train,
                     batch_size=model.get('batch_size', 32), quantize=model.get('quantize', False))


# --- running ------------------------------------------------------------------------------------------------------

def _settings(spec: ExperimentSpec, dataset_id: str) -> tuple[str, list[Setting]]:
    """The pooled id to encode once, and the settings evaluated on it."""
    collection = dataset_id.removeprefix('lareqa/')
    if dataset_id.startswith('lareqa/') and collection in lareqa.COLLECTIONS:
        langs = [lang for lang in spec.languages or lareqa.COLLECTIONS[collection]
                 if lang in lareqa.COLLECTIONS[collection]]
        kinds = [s for s in spec.settings if s in KINDS]
        settings = lareqa_settings(collection, kinds=kinds, langs=langs) if kinds else []
        pairs = [s for s in spec.settings if isinstance(s, list)]
        settings += [Setting(f'{dataset_id}/{q}/{c}', 'Mo' if q == c else 'Cr', q, c) for q, c in pairs
                     if q in lareqa.COLLECTIONS[collection] and c in lareqa.COLLECTIONS[collection]]
        return dataset_id, list(dict.fromkeys(settings))
    dataset = ir_datasets.load(dataset_id)
    query_lang = dataset.queries_lang() or 'xx'
    return dataset_id, [Setting(dataset_id, 'Mo', query_lang, dataset.docs_lang() or query_lang)]


class ExperimentRunner:
    """Runs an :class:`ExperimentSpec` step by step, skipping every step whose output exists."""

    def __init__(self, spec: ExperimentSpec, log=print):
        self.spec, self.log = spec, log
        self.out = Path(spec.output)

    def checkpoint(self, model: ModelSpec) -> str:
        """The model to encode with: a pretrained name/path, or the trained checkpoint (trained if missing)."""
        if model.pretrained is not None:
            return model.pretrained
        from .training import train
        target = self.out / 'models' / model.key
        if not target.exists():
            recipe = dict(model.train)
            base = recipe.pop('base')
            base = self.checkpoint(self.spec.models[base]) if base in self.spec.models else base
            data = self.training_data(recipe.pop('data'), recipe.pop('code_switching', None))
            self.log(f'training {model.name} -> {target}')
            train(base, data, target, **recipe)
        return str(target)

    def training_data(self, data: str, switching: dict | None):
        """A model's training data: ``data`` as is, or its English side plus ACS copies (logging the realised
        switch ratio per language and the lexicons' coverage)."""
        if switching is None:
            return data
        from .code_switching import CodeSwitcher, code_switched_items, load_lexicon
        from .training import load_training_data
        english = [i for items in load_training_data(data).values() for i in items if i.lang == 'en']
        switcher = CodeSwitcher([load_lexicon(p) for p in switching['lexicons']], p=switching.get('p', 0.5),
                                seed=switching.get('seed', 0))
        side = switching.get('side', 'both')
        switched = code_switched_items(english, queries=switcher if side in ('both', 'query') else None,
                                       passages=switcher if side in ('both', 'passage') else None, lang='cs')
        ratios = ', '.join(f'{lang} {switcher.stats.ratio(lang):.1%}' for lang in switcher.target_langs)
        self.log(f'code-switched {len(switched)} items: lexicon coverage {switcher.stats.coverage():.1%} of words, '
                 f'switched {switcher.stats.ratio():.1%} of known words ({ratios})')
        return {'acs': english + switched}

    def perquery(self, model: ModelSpec, dataset_id: str) -> pd.DataFrame:
        """Per-query values of one model on one data set, and its runs (both cached; missing parts computed)."""
        cache = self.out / 'perquery' / model.key / (dataset_id.replace('/', '__') + '.csv.gz')
        pooled_id, settings = _settings(self.spec, dataset_id)
        missing_runs = [s for s in settings if not self.run_path(model, s).exists()] if self.spec.run_depth else []
        if cache.exists() and not missing_runs:
            return pd.read_csv(cache, dtype={'qid': str})
        system = self.system(model, pooled_id)
        self.write_runs(model, system, missing_runs)
        if cache.exists():
            return pd.read_csv(cache, dtype={'qid': str})
        from .pooled import evaluate_pooled
        self.log(f'evaluating {model.name} on {len(settings)} settings of {dataset_id}')
        try:
            values = evaluate_pooled({model.name: system}, settings, self.spec.measures)
        except ValueError:  # a measure without a fast path: pt.Experiment
            from .evaluation import evaluate_settings
            values = evaluate_settings({model.name: system}, settings, self.spec.measures, perquery=True)
        write_atomically(cache, lambda tmp: values.to_csv(tmp, index=False, compression='gzip'))
        return values

    def run_path(self, model: ModelSpec, setting: Setting) -> Path:
        return self.out / 'runs' / model.name / (setting.dataset_id.replace('/', '__') + '.res.gz')

    def system(self, model: ModelSpec, pooled_id: str):
        from .encoders import HybridEncoder
        from .pooled import PooledDenseRetrieval
        encoder = HybridEncoder.from_pretrained(self.checkpoint(model), batch_size=model.batch_size,
                                                quantize=model.quantize, verbose=True)
        path = self.out / 'encodings' / model.key / pooled_id.replace('/', '__')
        return PooledDenseRetrieval(encoder, pooled_id, path)

    def write_runs(self, model: ModelSpec, system, settings: list[Setting]) -> None:
        """TREC runs, ``run_depth`` deep, one per setting."""
        import pyterrier as pt
        for setting in settings:
            topics = pt.get_dataset(f'irds:{setting.dataset_id}').get_topics('text')
            run = (system(setting) % self.spec.run_depth)(topics)
            write_atomically(self.run_path(model, setting),
                              lambda tmp: pt.io.write_results(run, str(tmp), run_name=model.name))

    def run(self) -> Path:
        frames = [self.perquery(model, dataset_id) for dataset_id in self.spec.datasets
                  for model in self.spec.models.values()]
        perquery = pd.concat(frames, ignore_index=True)
        results = self.out / 'results'
        results.mkdir(parents=True, exist_ok=True)
        self.tables(perquery, results)
        self.plots(perquery, results)
        self.log(f'results in {results}')
        return results

    def tables(self, perquery: pd.DataFrame, results: Path) -> None:
        per_setting = perquery.groupby(['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'measure'],
                                       sort=False)['value'].mean().unstack('measure').reset_index()
        _write_table(per_setting, results / 'settings', index=False)
        summaries = []
        for dataset_id, settings in self._datasets_of(perquery).items():
            table = macro_average_perquery(perquery[perquery['dataset_id'].isin(settings)])
            table.columns = [f'{measure} {kind}' for measure, kind in table.columns]
            summaries.append(table.assign(dataset=dataset_id).reset_index().set_index(['dataset', 'name']))
        _write_table(pd.concat(summaries), results / 'summary')
        if self.spec.baseline and len(self.spec.models) > 1:
            correction = 'bonferroni' if self.spec.correction == 'none' else self.spec.correction
            tests = [paired_tests(perquery, self.spec.baseline, str(m), correction=correction).assign(measure=str(m))
                     for m in self.spec.measures]
            tests = pd.concat(tests, ignore_index=True)
            if self.spec.correction == 'none':
                tests = tests.drop(columns=['p_corrected']).assign(significant=tests['p'] < 0.05)
            _write_table(tests, results / 'significance', index=False)

    def _datasets_of(self, perquery: pd.DataFrame) -> dict[str, list[str]]:
        """Each experiment data set -> the setting ids evaluated for it."""
        return {d: [s.dataset_id for s in _settings(self.spec, d)[1]] for d in self.spec.datasets}

    def plots(self, perquery: pd.DataFrame, results: Path) -> None:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        ap = perquery[perquery['measure'] == 'AP']
        pairs = ap[ap['kind'] != 'Mul']
        for (name, collection), frame in pairs.groupby(['name', pairs['dataset_id'].str.rsplit('/', n=2).str[0]]):
            grid = frame.groupby(['query_lang', 'doc_lang'])['value'].mean().unstack('doc_lang')
            if grid.size < 2:
                continue
            figure, axes = plt.subplots(figsize=(1 + 0.6 * grid.shape[1], 1 + 0.5 * grid.shape[0]))
            image = axes.imshow(grid.to_numpy(), cmap='viridis', vmin=0, vmax=1)
            axes.set_xticks(range(grid.shape[1]), grid.columns)
            axes.set_yticks(range(grid.shape[0]), grid.index)
            axes.set_xlabel('corpus language')
            axes.set_ylabel('query language')
            for (i, j), value in pd.DataFrame(grid.to_numpy()).stack().items():
                axes.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize=7, color='white')
            axes.set_title(f'{name}: AP on {collection}')
            figure.colorbar(image)
            figure.tight_layout()
            figure.savefig(results / f'heatmap_{name}_{collection.replace("/", "_")}.png', dpi=120)
            plt.close(figure)
        distance = perquery[(perquery['measure'] == 'RankDistance') & (perquery['kind'] == 'Mul')]
        for collection, frame in distance.groupby(distance['dataset_id'].str.rsplit('/', n=1).str[0]):
            means = frame.groupby(['query_lang', 'name'])['value'].mean().unstack('name')
            axes = means.plot.bar(figsize=(2 + 0.5 * len(means) * len(means.columns) ** 0.5, 4))
            axes.set_ylabel('mean rank distance (lower: less language bias)')
            axes.set_title(f'Rank distance per query language, {collection} (Mul)')
            axes.figure.tight_layout()
            axes.figure.savefig(results / f'rank_distance_{collection.replace("/", "_")}.png', dpi=120)
            plt.close(axes.figure)


def _write_table(table: pd.DataFrame, stem: Path, index: bool = True) -> None:
    write_atomically(stem.with_suffix('.csv'), lambda tmp: table.to_csv(tmp, index=index))
    write_atomically(stem.with_suffix('.md'), lambda tmp: tmp.write_text(table.round(4).to_markdown(index=index)))


def run_experiment(path: str | os.PathLike, log=print) -> Path:
    """Validate and run an experiment file; returns its results folder."""
    return ExperimentRunner(load_experiment(path), log=log).run()
