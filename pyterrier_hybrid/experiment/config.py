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
import yaml

from pyterrier_hybrid.data import lareqa
from pyterrier_hybrid.evaluation.measures import parse_measure
from pyterrier_hybrid.evaluation.settings import KINDS
from pyterrier_hybrid.training.recipe import Recipe, RecipeError

MODEL_KEYS = {'pretrained', 'train', 'batch_size', 'quantize'}
TOP_KEYS = {'name', 'output', 'models', 'datasets', 'settings', 'languages', 'measures', 'baseline', 'correction',
            'run_depth'}
CORRECTIONS = ('holm', 'bonferroni', 'fdr_bh', 'sidak', 'none')


class ExperimentError(ValueError):
    """An experiment file that cannot run; the message lists every problem with its line."""


@dataclass
class ModelSpec:
    """One model of an experiment: a pretrained checkpoint, or ``base`` fine-tuned on ``data`` with ``recipe``."""
    name: str
    pretrained: str | None = None
    base: str | None = None  # another model's name, or a checkpoint
    data: str | None = None
    recipe: Recipe | None = None
    batch_size: int = 32
    quantize: bool = False

    @property
    def key(self) -> str:
        """The model's cache key: its name and a digest of its definition.

        Lexicons count by their contents, not their paths, so the key does not depend on the directory the
        experiment is run from, and an edited lexicon is a new model."""
        definition = asdict(self)
        switching = self.recipe.code_switching if self.recipe else None
        if switching:
            definition['recipe']['code_switching']['lexicons'] = [_file_digest(p) for p in switching.lexicons]
        digest = hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:10]
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
    train, recipe = model.get('train'), None
    if train is not None:
        if not isinstance(train, dict):
            problems.append((where + ('train',), 'train is a mapping (base, data, strategy, ...)'))
            return None
        for key in ('base', 'data'):
            if key not in train:
                problems.append((where + ('train',), f'missing required key {key!r}'))
        if train.get('base') == name:
            problems.append((where + ('train', 'base'), 'a model cannot be trained from itself'))
        values = {k: v for k, v in train.items() if k not in ('base', 'data')}
        switching = values.get('code_switching')
        if isinstance(switching, dict) and isinstance(switching.get('lexicons'), list):
            for i, lexicon in enumerate(switching['lexicons']):
                if not (base / str(lexicon)).is_file():
                    problems.append((where + ('train', 'code_switching', 'lexicons', i),
                                     f'lexicon file {base / str(lexicon)} does not exist'))
            values['code_switching'] = {**switching, 'lexicons': [str(base / x) for x in switching['lexicons']]}
        try:
            recipe = Recipe.from_mapping(values)
        except RecipeError as error:
            problems.append((where + ('train', *error.field.split('.')), error.message))
    return ModelSpec(name=name, pretrained=model.get('pretrained'), base=(train or {}).get('base'),
                     data=(train or {}).get('data'), recipe=recipe, batch_size=model.get('batch_size', 32),
                     quantize=model.get('quantize', False))
