"""The training recipe: what a trained model is, declared once and free of torch.

:class:`Recipe` is the single place where a training option, its default, its type, its valid values and its help
text live. The ``train`` command builds its options from it (:func:`add_recipe_arguments`), an experiment file's
``train:`` block is validated by constructing it (:meth:`Recipe.from_mapping`), the trainer reads it, and a
trained checkpoint records its :meth:`Recipe.to_dict`. Base model and training data are not part of the recipe:
they are its inputs, keyed separately (by content) where models are cached.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Batch strategies and the alpha each fixes (None: hybrid's alpha is free, default 0.5).
STRATEGIES = {'hybrid': None, 'xx-mono': 1.0, 'xy': 0.0, 'en-en': 1.0}
#: Whose hard negatives a cross-lingual row gets: the passage's version, the query's, or mined (query-language
#: distractors the base model ranks above the answer; :mod:`pyterrier_hybrid.training.mining`).
NEGATIVE_LANGUAGES = ('passage', 'query', 'mined')
#: Which side of an item code-switching rewrites.
SWITCH_SIDES = ('both', 'query', 'passage')
DEFAULT_ALPHA = 0.5


class RecipeError(ValueError):
    """A recipe field with a wrong type or value; ``field`` names it (dotted for nested fields)."""

    def __init__(self, field: str, message: str):
        super().__init__(f'{field}: {message}')
        self.field, self.message = field, message


@dataclass(frozen=True)
class CodeSwitching:
    """Artificial code-switching (arXiv 2305.05295) of the English side of the training data."""
    lexicons: tuple[str, ...] = field(metadata={'help': 'MUSE-format lexicon files (en-xx.txt), one per language'})
    p: float = field(default=0.5, metadata={'help': 'probability of switching each word a lexicon knows'})
    seed: int = field(default=0, metadata={'help': 'seed of the switching choices'})
    side: str = field(default='both', metadata={'help': f'what to switch: {", ".join(SWITCH_SIDES)}'})
    keep_translations: bool = field(default=False, metadata={
        'help': "train on the data's real translations too, the switched copies one more language in hybrid "
                'batches (ACS for languages with a lexicon but no parallel data); default: English and its copies'})

    def __post_init__(self):
        _check_types(self, 'code_switching.')
        if not self.lexicons:
            raise RecipeError('code_switching.lexicons', 'give at least one lexicon file')
        if not 0.0 <= self.p <= 1.0:
            raise RecipeError('code_switching.p', f'must lie in [0, 1], not {self.p!r}')
        if self.side not in SWITCH_SIDES:
            raise RecipeError('code_switching.side', f'unknown side {self.side!r}; valid: {", ".join(SWITCH_SIDES)}')


@dataclass(frozen=True)
class Recipe:
    """How a model is fine-tuned (arXiv 2408.10536's hybrid batches and its baselines)."""
    strategy: str = field(default='hybrid', metadata={
        'help': f'batch strategy: {", ".join(STRATEGIES)} (hybrid mixes monolingual and cross-lingual batches)'})
    alpha: float | None = field(default=None, metadata={
        'help': f'probability of a monolingual batch; fixed by every strategy but hybrid (default {DEFAULT_ALPHA})'})
    steps: int = field(default=1000, metadata={'help': 'optimiser steps'})
    batch_size: int = field(default=32, metadata={'help': 'pairs per batch and device'})
    learning_rate: float = field(default=2e-5, metadata={'help': 'peak learning rate (linear warm-up over 10%%)'})
    temperature: float = field(default=0.05, metadata={
        'help': "InfoNCE temperature (scale = 1 / temperature); use the model's pre-training one (E5: 0.01)"})
    max_length: int | None = field(default=None, metadata={'help': "truncate texts to this many tokens "
                                                                   "(default: the model's max_seq_length)"})
    negative_language: str = field(default='passage', metadata={
        'help': "hard negatives of cross-lingual pairs: the passage's or the query's language version, or mined: "
                "query-language passages the base model ranks above the answer (the language bias of Mul)"})
    freeze_embeddings: bool = field(default=False, metadata={'help': 'keep the word embeddings fixed'})
    distillation: float = field(default=0.0, metadata={
        'help': 'weight of multilingual distillation beside InfoNCE: the squared distance of every version of '
                "an item (query and answer) to the teacher's vector of its English version (0: off)"})
    teacher: str | None = field(default=None, metadata={
        'help': 'the distillation teacher, Hub id or path (default: the base model, frozen)'})
    mini_batch_size: int | None = field(default=None, metadata={
        'help': 'GradCache mini-batch size: large batches in small memory (default: plain InfoNCE)'})
    languages: tuple[str, ...] | None = field(default=None, metadata={'help': 'train on these languages only'})
    seed: int = field(default=42, metadata={'help': 'seed of the batches, negatives and initialisation'})
    code_switching: CodeSwitching | None = field(default=None, metadata={
        'help': 'train on the English side plus its code-switched copies (experiment files only)'})

    def __post_init__(self):
        _check_types(self, '')
        if self.strategy not in STRATEGIES:
            raise RecipeError('strategy', f'unknown strategy {self.strategy!r}; valid: {", ".join(STRATEGIES)}')
        fixed = STRATEGIES[self.strategy]
        if fixed is not None and self.alpha not in (None, fixed):
            raise RecipeError('alpha', f'strategy {self.strategy!r} fixes alpha = {fixed}; use strategy hybrid for '
                                       f'alpha = {self.alpha}')
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise RecipeError('alpha', f'must lie in [0, 1] (1 = X-X-mono, 0 = X-Y), not {self.alpha}')
        for name in ('steps', 'batch_size', 'max_length', 'mini_batch_size'):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(name, f'must be a positive number, not {value}')
        for name in ('learning_rate', 'temperature'):
            if getattr(self, name) <= 0:
                raise RecipeError(name, f'must be positive, not {getattr(self, name)}')
        if self.distillation < 0:
            raise RecipeError('distillation', f'is a weight >= 0, not {self.distillation}')
        if self.teacher is not None and not self.distillation:
            raise RecipeError('teacher', 'is the distillation teacher; set distillation > 0 to use it')
        if self.distillation and self.mini_batch_size:
            raise RecipeError('distillation', 'does not combine with GradCache (mini_batch_size) yet')
        if self.negative_language not in NEGATIVE_LANGUAGES:
            raise RecipeError('negative_language', f'unknown value {self.negative_language!r}; valid: '
                                                   f'{", ".join(NEGATIVE_LANGUAGES)}')

    @property
    def effective_alpha(self) -> float:
        """The monolingual-batch probability this recipe trains with."""
        fixed = STRATEGIES[self.strategy]
        return fixed if fixed is not None else (DEFAULT_ALPHA if self.alpha is None else self.alpha)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Recipe:
        """A recipe from plain values (YAML, JSON, CLI); unknown keys are a :class:`RecipeError` listing the valid
        ones. Lists become tuples, so ``asdict`` round-trips."""
        values = dict(values)
        _check_keys(cls, values, '')
        switching = values.get('code_switching')
        if switching is not None:
            if not isinstance(switching, Mapping):
                raise RecipeError('code_switching', 'is a mapping with lexicons, p, seed, side and keep_translations')
            _check_keys(CodeSwitching, switching, 'code_switching.')
            if 'lexicons' not in switching:
                raise RecipeError('code_switching.lexicons', 'missing: give the lexicon files')
            values['code_switching'] = CodeSwitching(**{**switching, 'lexicons': _tuple(switching['lexicons'])})
        if values.get('languages') is not None:
            values['languages'] = _tuple(values['languages'])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (what a checkpoint records); :meth:`from_mapping` reads them back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def digest(self) -> str:
        """A content hash of the recipe (its canonical JSON)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _check_keys(cls: type, values: Mapping, prefix: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in valid:
            raise RecipeError(f'{prefix}{key}', f'unknown key {key!r}; valid: {", ".join(valid)}')


def _check_types(instance: Any, prefix: str) -> None:
    """Check every field against its annotation: ``steps: forty`` must not reach the trainer."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if not _matches(value, hints[f.name]):
            raise RecipeError(prefix + f.name, f'expected {_describe(hints[f.name])}, not {value!r}')


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__('types'), 'UnionType', None)):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    names = {int: 'an integer', float: 'a number', str: 'a string', bool: 'true or false'}
    described = [names.get(a, 'a list of strings' if typing.get_origin(a) is tuple else getattr(a, '__name__', a))
                 for a in args]
    return ' or '.join(described) + (' (or nothing)' if type(None) in typing.get_args(hint) else '')


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--option`` per recipe field (defaults and help from :class:`Recipe`), for the ``train`` command.

    ``code_switching`` is left to experiment files."""
    hints = typing.get_type_hints(Recipe)
    for f in dataclasses.fields(Recipe):
        if f.name == 'code_switching':
            continue
        flag = '--' + f.name.replace('_', '-')
        base = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        shown = f.metadata['help']  # the command's formatter adds each default
        if base is bool:
            parser.add_argument(flag, action='store_true', help=shown)
        elif typing.get_origin(base) is tuple:
            parser.add_argument(flag, nargs='+', help=shown)
        elif f.name == 'strategy':
            parser.add_argument(flag, choices=list(STRATEGIES), default=f.default, help=shown)
        elif f.name == 'negative_language':
            parser.add_argument(flag, choices=list(NEGATIVE_LANGUAGES), default=f.default, help=shown)
        else:
            parser.add_argument(flag, type=base, default=f.default, help=shown)


def recipe_from_arguments(args: argparse.Namespace) -> Recipe:
    """The :class:`Recipe` of parsed ``train`` options."""
    return Recipe.from_mapping({f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)
                                if f.name != 'code_switching'})
