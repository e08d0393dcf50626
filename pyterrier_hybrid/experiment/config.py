"""Declarative experiments: one YAML file names models, data sets, settings and measures; one call trains what
must be trained, encodes each corpus once per model, evaluates, compares and draws, reusing what is on disk.

.. code-block:: yaml

    name: paper-table
    output: runs/paper-table          # relative to this file; default runs/<name>; $VARS are expanded
    models:
      mE5: {pretrained: intfloat/multilingual-e5-small}
      mE5-debiased:                   # mE5's checkpoint and encoding, each language's mean removed
        model: mE5                    # (LanguageBiasRemoval); model: shares another entry's cache
        bias_removal: {method: centre}  # or project (k: 3), centre+project; query_means: queries
      hybrid:
        train: {base: mE5, data: lareqa/mlqa-r, strategy: hybrid, alpha: 0.5, steps: 1000, batch_size: 32}
      acs:
        train: {base: mE5, data: lareqa/mlqa-r, strategy: xx-mono,
                code_switching: {lexicons: [lexicons/en-de.txt, lexicons/en-ar.txt], p: 0.5}}
    seeds: [1, 2, 3]                  # optional: train every trained model once per seed (mean and spread)
    datasets: [lareqa/xquad-r]        # lareqa/xquad-r, lareqa/mlqa-r, miracl/<lang>/dev, any ir_datasets id
    settings: [Mo, Cr, Mul]           # and/or language pairs such as [de, en] (LAReQA only)
    languages: [de, en, zh]           # optional: restrict the LAReQA languages
    measures: [AP, nDCG@10, R@100, RankDistance]
    baseline: mE5                     # optional: paired t-tests against it
    comparisons: [[acs, hybrid]]      # optional: [model, against] pairs set head to head (difference maps, tests)
    correction: holm                  # multiple-testing correction (statsmodels name) or none
    run_depth: 100                    # documents per query in the saved TREC runs (0: none)
    x-budget: &budget {steps: 60}     # top-level keys starting with x- are ignored: a place for YAML anchors

The output folder holds ``models/`` (trained checkpoints), ``encodings/`` (one pooled encoding per model and
data set), ``perquery/`` (per-query values per model and data set), ``runs-top<run_depth>/`` (TREC runs) and
``results/``: per-setting tables, the Mo / Cr / Mul summary, significance tests (CSV and Markdown), AP heatmaps per
language pair and a rank-distance chart per query language (PNG). Everything is written atomically and keyed by
content (:attr:`ModelSpec.key`), so a second run does no work, an interrupted one continues where it stopped, and a
changed base checkpoint, recipe, lexicon or training file is a new model.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ir_datasets
import yaml

from pyterrier_hybrid.checkpoints import checkpoint_digest, digest, file_digest
from pyterrier_hybrid.data import lareqa
from pyterrier_hybrid.evaluation.measures import parse_measure
from pyterrier_hybrid.evaluation.settings import KINDS
from pyterrier_hybrid.training.recipe import Recipe, RecipeError

MODEL_KEYS = {'pretrained', 'train', 'model', 'batch_size', 'quantize', 'bias_removal'}
TOP_KEYS = {'name', 'output', 'models', 'seeds', 'datasets', 'settings', 'languages', 'measures', 'baseline',
            'comparisons', 'correction', 'run_depth'}
CORRECTIONS = ('holm', 'bonferroni', 'fdr_bh', 'sidak', 'none')


class ExperimentError(ValueError):
    """An experiment file that cannot run; the message lists every problem with its line."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of an experiment: a pretrained checkpoint, or ``base`` fine-tuned on ``data`` with ``recipe``."""
    name: str
    pretrained: str | None = None
    base: ModelSpec | str | None = None  # another model of the experiment, or a checkpoint (Hub id or path)
    data: str | None = None  # a LAReQA collection or a JSONL file
    recipe: Recipe | None = None
    batch_size: int = 32  # encoding options: how the model is used, not what it is
    quantize: bool = False
    # LanguageBiasRemoval's options (method, k, query_means), applied to the encoding: ((name, value), ...)
    bias_removal: tuple[tuple[str, Any], ...] | None = None
    # ``model: NAME`` in the file: the entry whose checkpoint (trained once) and encodings this one uses
    same_as: str | None = None

    @property
    def seed(self) -> int | None:
        """The training seed (None for a pretrained model)."""
        return None if self.recipe is None else self.recipe.seed

    @property
    def trains(self) -> bool:
        """Whether the entry has a checkpoint of its own to train (a ``model: NAME`` entry uses NAME's)."""
        return self.recipe is not None and self.same_as is None

    @property
    def label(self) -> str:
        """How logs name the model: ``hybrid seed 2``."""
        return self.name if self.recipe is None else f'{self.name} seed {self.seed}'

    def seeded(self, seed: int) -> ModelSpec:
        """This model trained with ``seed`` (from its base trained with the same seed); pretrained ones as they are."""
        if self.recipe is None:
            return self
        base = self.base.seeded(seed) if isinstance(self.base, ModelSpec) else self.base
        return dataclasses.replace(self, base=base, recipe=dataclasses.replace(self.recipe, seed=seed))

    def digest(self) -> str:
        """What the model is, by content: a pretrained checkpoint's files (or Hub id); for a trained model its
        recipe (lexicons and a distillation teacher by content), its base's digest and its training data's.
        Encoding options and the name are left out, so int8 encoding does not retrain and renaming a base does not
        retrain what it is under."""
        if self.recipe is None:
            return checkpoint_digest(self.pretrained)
        base = self.base.digest() if isinstance(self.base, ModelSpec) else checkpoint_digest(self.base)
        recipe = self.recipe
        if recipe.code_switching:
            lexicons = tuple(file_digest(p) for p in recipe.code_switching.lexicons)
            recipe = dataclasses.replace(recipe, code_switching=dataclasses.replace(recipe.code_switching,
                                                                                    lexicons=lexicons))
        if recipe.teacher:
            recipe = dataclasses.replace(recipe, teacher=checkpoint_digest(recipe.teacher))
        return digest({'base': base, 'data': data_digest(self.data), 'recipe': recipe.digest()})

    @property
    def key(self) -> str:
        """The trained model's cache key: a readable prefix (name, seed) and :meth:`digest`; an entry that is
        ``model: NAME`` keys by that name, so both find one checkpoint and one encoding."""
        name = self.same_as or self.name
        prefix = name if self.recipe is None else f'{name}-seed{self.seed}'
        return f'{prefix}-{self.digest()[:12]}'

    @property
    def encoding_key(self) -> str:
        """The cache key of what the model's vectors depend on: :attr:`key` plus int8 quantisation.

        ``batch_size`` is left out: it changes how many texts share a forward pass, not the model or the maths,
        so it is a memory setting like the device (vectors differ only by float rounding, as across devices)."""
        return f'{self.key}-int8' if self.quantize else self.key

    @property
    def removal_key(self) -> str | None:
        """The cache key of the model's language-bias removal (None without one): where its debiased vectors live
        beside the encoding."""
        return None if self.bias_removal is None else f'debiased-{digest(dict(self.bias_removal))[:8]}'

    @property
    def system_key(self) -> str:
        """The cache key of the model's per-query values and runs: :attr:`encoding_key` plus its language-bias
        removal, which transforms the stored vectors (kept beside them, so changing it does not re-encode)."""
        return self.encoding_key if self.removal_key is None else f'{self.encoding_key}-{self.removal_key}'


def data_digest(data: str) -> str:
    """Training data by content: a LAReQA collection by the published sha256s of its files (each file read is
    checked against them), a JSONL file by its own."""
    collection = data.removeprefix('lareqa/')
    if collection in lareqa.COLLECTIONS:
        return digest({f: h for f, h in sorted(lareqa.SHA256.items()) if f.startswith(f'{collection}/')})
    return file_digest(data)


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
    comparisons: list[tuple[str, str]] = field(default_factory=list)  # (model, against), besides the baseline
    correction: str = 'holm'
    run_depth: int = 100
    seeds: list[int] | None = None  # None: each trained model once, with its recipe's seed

    def variants(self) -> list[ModelSpec]:
        """Every model to evaluate: each trained model once per seed, each pretrained model once (its values
        serve every seed)."""
        return [variant for model in self.models.values()
                for variant in ([model.seeded(s) for s in self.seeds] if self.seeds and model.recipe else [model])]


# --- reading and validating ---------------------------------------------------------------------------------------

class _Located:
    """Line numbers of the keys and items of a YAML document, by path, and its duplicate keys (which YAML
    resolves silently: the last one wins)."""

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        self.duplicates: list[tuple[tuple, str]] = []
        self._keys = yaml.constructor.SafeConstructor()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            self._walk(node, ())

    def _walk(self, node, path: tuple) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, value in node.value:
                merge = key_node.tag == 'tag:yaml.org,2002:merge'
                key = '<<' if merge else self._keys.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen and key != '<<':
                    what = 'model name' if path == ('models',) else 'key'
                    self.duplicates.append((path + (key,), f'duplicate {what} {key!r} (lines {seen[key]} and '
                                                           f'{line}): YAML would keep only the last'))
                seen.setdefault(key, line)
                self._walk(value, path + (key,))
                self.lines[path + (key,)] = line  # the key's line, not its value's
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
        located = _Located(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ExperimentError(f'{path}: not valid YAML: {error}') from error
    problems: list[tuple[tuple, str]] = list(located.duplicates)
    raw = _expand_vars(raw, (), problems)
    spec = _validate(raw, problems, path.parent)
    if problems:
        raise ExperimentError('\n'.join(f'{path}:{located.at(where)}: {".".join(map(str, where)) or "top"}: '
                                        f'{message}' for where, message in problems))
    return spec


_VAR = re.compile(r'\$(?:\{(?P<braced>[^}]*)\}|(?P<name>\w+))')


def _expand_vars(value: Any, where: tuple, problems: list) -> Any:
    """``$VAR`` / ``${VAR}`` in string values, so one file serves machines with different paths; an unset one is
    a problem here rather than a missing checkpoint a minute into the run."""
    if isinstance(value, str):
        def expand(match: re.Match) -> str:
            name = match['name'] if match['braced'] is None else match['braced']
            if name not in os.environ:
                problems.append((where, f'environment variable {name!r} is not set (in {value!r})'))
                return match[0]
            return os.environ[name]
        return _VAR.sub(expand, value)
    if isinstance(value, list):
        return [_expand_vars(v, where + (i,), problems) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand_vars(v, where + (k,), problems) for k, v in value.items()}
    return value


def _unknown_keys(value: Mapping, valid: set, where: tuple, problems: list) -> None:
    for key in value:
        if key not in valid:
            problems.append((where + (key,), f'unknown key {key!r}; valid: {", ".join(sorted(valid))}'))


def _name_problem(name: Any) -> str | None:
    """Names become file and folder names under the output folder: no separators, no ``..``."""
    if not isinstance(name, str) or not name:
        return f'a name is a non-empty string, not {name!r}'
    if name in ('.', '..') or any(c in name for c in ('/', '\\', '\0')):
        return f'{name!r} would be written outside its folder: a name may not contain / or \\ or be . or ..'
    return None


def _list(raw: Mapping, key: str, default: Any, problems: list, example: str) -> list | None:
    """A list-valued top-level key; a string (``settings: Mo``) is a problem, not a list of characters."""
    value = raw.get(key, default)
    if value is None or isinstance(value, list):
        return value
    problems.append(((key,), f'{key} is a list such as {example}, not {value!r}'))
    return None


def _validate(raw: Any, problems: list, base: Path) -> ExperimentSpec | None:
    if not isinstance(raw, dict):
        problems.append(((), 'an experiment file is a mapping with name, models, datasets ...'))
        return None
    _unknown_keys({k: v for k, v in raw.items() if not str(k).startswith('x-')}, TOP_KEYS, (), problems)
    for key in ('name', 'models', 'datasets'):
        if key not in raw:
            problems.append(((), f'missing required key {key!r}'))
    if 'name' in raw and _name_problem(raw['name']):
        problems.append((('name',), _name_problem(raw['name'])))
    seeds = _list(raw, 'seeds', None, problems, '[1, 2, 3]')
    for i, seed in enumerate(seeds or []):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed in seeds[:i]:
            problems.append((('seeds', i), f'seeds are distinct integers, not {seed!r}'))
    if seeds == []:
        problems.append((('seeds',), 'give at least one seed (or leave seeds out)'))
    models = {}
    raw_models = raw.get('models') or {}
    if not isinstance(raw_models, dict):
        problems.append((('models',), 'models is a mapping of name -> {pretrained: ...} or {train: ...}'))
        raw_models = {}
    for name, model in raw_models.items():
        if _name_problem(name):
            problems.append((('models', name), f'model name: {_name_problem(name)}'))
        models[name] = _validate_model(name, model, raw_models, problems, base, seeds)
    _check_cycles(models, problems)
    datasets = _list(raw, 'datasets', [], problems, '[lareqa/xquad-r]') or []
    for i, dataset_id in enumerate(datasets):
        try:
            ir_datasets.load(dataset_id)
        except (KeyError, TypeError) as error:
            message = error.args[0] if error.args else error
            problems.append((('datasets', i), f'unknown data set {dataset_id!r}: {message}'))
    langs = _list(raw, 'languages', None, problems, '[de, en, zh]')
    valid_langs = sorted(set().union(*lareqa.COLLECTIONS.values()))
    for i, lang in enumerate(langs or []):
        if lang not in valid_langs:
            problems.append((('languages', i), f'unknown language {lang!r}; valid: {", ".join(valid_langs)}'))
    settings = _list(raw, 'settings', list(KINDS), problems, '[Mo, Cr, Mul] or [[de, en]]') or []
    for i, setting in enumerate(settings):
        pair = isinstance(setting, list) and len(setting) == 2 and all(s in valid_langs for s in setting)
        if setting not in KINDS and not pair:
            problems.append((('settings', i), f'unknown setting {setting!r}; valid: {", ".join(KINDS)} or a '
                                              f'[query_lang, doc_lang] pair of {", ".join(valid_langs)}'))
    measures = []
    for i, name in enumerate(_list(raw, 'measures', ['AP', 'nDCG@10', 'R@100', 'RankDistance'], problems,
                                   '[AP, nDCG@10]') or []):
        try:
            measures.append(parse_measure(name))
        except ValueError as error:
            problems.append((('measures', i), str(error)))
    def unknown_model(name: Any) -> str | None:
        """The problem with ``name`` as a reference to one of the file's models (a list is not a name)."""
        if isinstance(name, str) and name in raw_models:
            return None
        return f'unknown model {name!r}; valid: {", ".join(map(str, raw_models))}'

    baseline = raw.get('baseline')
    if baseline is not None and (problem := unknown_model(baseline)):
        problems.append((('baseline',), problem))
    comparisons = []
    for i, pair in enumerate(_list(raw, 'comparisons', [], problems, '[[acs, hybrid]]') or []):
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] != pair[1]):
            problems.append((('comparisons', i), f'a comparison is [model, against], two different models, not '
                                                 f'{pair!r}'))
        elif unknown := next(filter(None, map(unknown_model, pair)), None):
            problems.append((('comparisons', i), unknown))
        else:
            comparisons.append(tuple(pair))
    correction = raw.get('correction', 'holm')
    if correction not in CORRECTIONS:
        problems.append((('correction',), f'unknown correction {correction!r}; valid: {", ".join(CORRECTIONS)}'))
    run_depth = raw.get('run_depth', 100)
    if not isinstance(run_depth, int) or isinstance(run_depth, bool) or run_depth < 0:
        problems.append((('run_depth',), f'run_depth is a number of documents >= 0, not {run_depth!r}'))
    if problems:
        return None
    output = Path(raw.get('output') or f'runs/{raw["name"]}')
    return ExperimentSpec(name=raw['name'], output=output if output.is_absolute() else base / output,
                          models=_resolve_bases(models), datasets=datasets, settings=settings, languages=langs,
                          measures=measures, baseline=baseline, comparisons=comparisons, correction=correction,
                          run_depth=run_depth, seeds=seeds)


def _validate_model(name: Any, model: Any, all_models: Mapping, problems: list, base: Path,
                    seeds: list | None) -> ModelSpec | None:
    where = ('models', name)
    if not isinstance(model, dict) or sum(key in model for key in ('pretrained', 'train', 'model')) != 1:
        problems.append((where, 'a model has exactly one of pretrained: (a Hub id or path), train: {...} or model: '
                                '(another entry, used with other encoding options)'))
        return None
    _unknown_keys(model, MODEL_KEYS, where, problems)
    same_as = model.get('model')
    if same_as is not None:
        target = all_models.get(same_as) if isinstance(same_as, str) else None
        if not isinstance(target, dict) or 'model' in target:
            valid = ', '.join(str(n) for n, m in all_models.items() if isinstance(m, dict) and 'model' not in m)
            problems.append((where + ('model',), f'model names an entry with pretrained: or train:, not {same_as!r}; '
                                                 f'valid: {valid}'))
    batch_size, quantize = model.get('batch_size', 32), model.get('quantize', False)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        problems.append((where + ('batch_size',), f'batch_size is a positive integer, not {batch_size!r}'))
    if not isinstance(quantize, bool):
        problems.append((where + ('quantize',), f'quantize is true or false, not {quantize!r}'))
    pretrained = model.get('pretrained')
    if pretrained is not None and not isinstance(pretrained, str):
        problems.append((where + ('pretrained',), f'pretrained is a Hub id or a path, not {pretrained!r}'))
    elif pretrained is not None and pretrained.startswith(('/', '.')) and not Path(pretrained).is_dir():
        problems.append((where + ('pretrained',), f'checkpoint directory {pretrained} does not exist'))
    train, recipe, data = model.get('train'), None, None
    if train is not None:
        if not isinstance(train, dict):
            problems.append((where + ('train',), 'train is a mapping (base, data, strategy, ...)'))
            return None
        for key in ('base', 'data'):
            if key not in train:
                problems.append((where + ('train',), f'missing required key {key!r}'))
        if train.get('base') == name:
            problems.append((where + ('train', 'base'), 'a model cannot be trained from itself'))
        elif 'base' in train and not isinstance(train['base'], str):
            problems.append((where + ('train', 'base'), f'base is a model name or a checkpoint, not {train["base"]!r}'))
            return None
        data = train.get('data')
        if data is not None:
            data = _training_data(data, where + ('train', 'data'), problems, base)
        if seeds and 'seed' in train:
            problems.append((where + ('train', 'seed'), 'give seeds (top level) or train.seed, not both'))
        values = {k: v for k, v in train.items() if k not in ('base', 'data')}
        switching = values.get('code_switching')
        if isinstance(switching, dict) and isinstance(switching.get('lexicons'), list):
            for i, lexicon in enumerate(switching['lexicons']):
                if not (base / str(lexicon)).is_file():
                    problems.append((where + ('train', 'code_switching', 'lexicons', i),
                                     f'lexicon file {base / str(lexicon)} does not exist'))
            values['code_switching'] = {**switching, 'lexicons': [str(base / x) for x in switching['lexicons']]}
        if isinstance(values.get('teacher'), str) and (base / values['teacher']).is_dir():  # else a Hub id
            values['teacher'] = str(base / values['teacher'])
        try:
            recipe = Recipe.from_mapping(values)
        except RecipeError as error:
            problems.append((where + ('train', *error.field.split('.')), error.message))
    return ModelSpec(name=name, pretrained=pretrained, base=(train or {}).get('base'), data=data, recipe=recipe,
                     batch_size=batch_size, quantize=quantize, same_as=same_as,
                     bias_removal=_bias_removal(model.get('bias_removal'), where + ('bias_removal',), problems))


def _bias_removal(options: Any, where: tuple, problems: list) -> tuple[tuple[str, Any], ...] | None:
    """``bias_removal: {method: centre}`` (``{}`` or ``true``: the defaults) as sorted (name, value) pairs."""
    from pyterrier_hybrid.retrieval.bias import check_options
    if options is None or options is False:
        return None
    options = {} if options is True else options
    if not isinstance(options, dict):
        problems.append((where, f'bias_removal is true or a mapping of method, k, query_means; not {options!r}'))
        return None
    names = inspect.signature(check_options).parameters  # method, k, query_means
    _unknown_keys(options, set(names), where, problems)
    options = {k: v for k, v in options.items() if k in names}
    try:
        check_options(**options)
    except ValueError as error:
        problems.append((where, str(error)))
        return None
    return tuple(sorted(options.items()))


def _training_data(data: Any, where: tuple, problems: list, base: Path) -> str | None:
    """A LAReQA collection, or a JSONL file relative to the experiment file (its content keys the model)."""
    if isinstance(data, str) and data.removeprefix('lareqa/') in lareqa.COLLECTIONS:
        return data
    if isinstance(data, str) and (base / data).is_file():
        return str(base / data)
    problems.append((where, f'training data {data!r} is neither a JSONL file (relative to this file) nor one of '
                            f'{", ".join("lareqa/" + c for c in lareqa.COLLECTIONS)}'))
    return None


def _check_cycles(models: Mapping[Any, ModelSpec | None], problems: list) -> None:
    """``a`` trained from ``b`` trained from ``a`` would recurse forever; name the cycle at each member."""
    for name, model in models.items():
        chain, current = [name], model
        while current is not None and current.base in models and current.base not in chain:
            chain.append(current.base)
            current = models[current.base]
        if current is not None and current.base == name and len(chain) > 1:
            cycle = ' -> '.join(map(str, chain + [name]))
            problems.append((('models', name, 'train', 'base'), f'cyclic base: {cycle}'))


def _resolve_bases(models: Mapping[str, ModelSpec]) -> dict[str, ModelSpec]:
    """Replace each base that names a model of the experiment by that model's spec, and give each ``model: NAME``
    entry that model's checkpoint (pretrained or trained) with its own encoding options."""
    resolved: dict[str, ModelSpec] = {}

    def resolve(name: str) -> ModelSpec:
        if name not in resolved:
            model = models[name]
            if model.same_as is not None:
                what = resolve(model.same_as)
                model = dataclasses.replace(model, pretrained=what.pretrained, base=what.base, data=what.data,
                                            recipe=what.recipe)
            base = resolve(model.base) if model.base in models else model.base
            resolved[name] = dataclasses.replace(model, base=base)
        return resolved[name]

    return {name: resolve(name) for name in models}
