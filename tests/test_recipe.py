"""The training recipe is declared once: its defaults, types and checks reach the CLI, YAML and checkpoints."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from pyterrier_hybrid import CodeSwitching, Recipe, RecipeError
from pyterrier_hybrid.training.recipe import add_recipe_arguments, recipe_from_arguments


def test_cli_options_are_the_recipe_fields_with_its_defaults():
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    assert recipe_from_arguments(parser.parse_args([])) == Recipe()
    args = parser.parse_args(['--strategy', 'xy', '--steps', '40', '--languages', 'de', 'en', '--freeze-embeddings'])
    assert recipe_from_arguments(args) == Recipe(strategy='xy', steps=40, languages=('de', 'en'),
                                                 freeze_embeddings=True)
    flags = {action.dest for action in parser._actions} - {'help'}
    assert flags == {f.name for f in dataclasses.fields(Recipe)} - {'code_switching'}


def test_round_trip_through_plain_values():
    recipe = Recipe(strategy='hybrid', alpha=0.3, temperature=0.01, languages=('de',),
                    code_switching=CodeSwitching(lexicons=('en-de.txt',), p=0.25, side='query'))
    assert Recipe.from_mapping(recipe.to_dict()) == recipe
    assert recipe.digest() == Recipe.from_mapping(recipe.to_dict()).digest() != Recipe().digest()
    assert (Recipe(strategy='xy').effective_alpha, Recipe().effective_alpha, recipe.effective_alpha) == (0.0, 0.5, 0.3)


@pytest.mark.parametrize('values,field,message', [
    ({'steps': 'forty'}, 'steps', "expected an integer, not 'forty'"),
    ({'steps': 0}, 'steps', 'must be a positive number, not 0'),
    ({'steps': -5}, 'steps', 'must be a positive number, not -5'),
    ({'batch_size': 'x'}, 'batch_size', "expected an integer, not 'x'"),
    ({'batch_size': True}, 'batch_size', 'expected an integer, not True'),
    ({'learning_rate': 0}, 'learning_rate', 'must be positive'),
    ({'strategy': 'hybird'}, 'strategy', "unknown strategy 'hybird'; valid: hybrid, xx-mono, xy, en-en"),
    ({'strategy': 'xy', 'alpha': 0.5}, 'alpha', "strategy 'xy' fixes alpha = 0.0"),
    ({'alpha': 1.5}, 'alpha', r'must lie in \[0, 1\]'),
    ({'stepz': 3}, 'stepz', "unknown key 'stepz'; valid: strategy, alpha, steps"),
    ({'languages': 'de'}, 'languages', 'expected a list of strings'),
    ({'code_switching': {'lexicons': []}}, 'code_switching.lexicons', 'at least one lexicon'),
    ({'code_switching': {'lexicons': ['a'], 'p': 2}}, 'code_switching.p', r'must lie in \[0, 1\]'),
    ({'code_switching': {'lexicons': ['a'], 'side': 'doc'}}, 'code_switching.side', "unknown side 'doc'"),
    ({'code_switching': {'p': 0.5}}, 'code_switching.lexicons', 'missing'),
])
def test_bad_values_name_the_field(values, field, message):
    with pytest.raises(RecipeError, match=message) as error:
        Recipe.from_mapping(values)
    assert error.value.field == field
