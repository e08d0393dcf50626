"""The pyterrier-hybrid command, run as a user would: in a subprocess."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

from pyterrier_hybrid import DenseIndex, read_recipe
from pyterrier_hybrid.cli import parser

pytestmark = pytest.mark.slow  # see pyproject.toml


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'pyterrier_hybrid', *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, 'TOKENIZERS_PARALLELISM': 'false'})


def test_help_and_user_errors_exit_2_without_traceback(tiny_model, tmp_path, lareqa_dir):
    done = cli('--help')
    assert done.returncode == 0 and 'train' in done.stdout and 'index' in done.stdout
    for args, message in [(('train', tiny_model, 'lareqa/mlqa-r', tmp_path / 'o', '--alpha', '1.5'), 'alpha'),
                          (('train', tiny_model, tmp_path / 'none.jsonl', tmp_path / 'o'), 'neither a JSONL'),
                          (('index', tiny_model, 'lareqa/xquad-r/xx', tmp_path / 'i'), "unknown language 'xx'"),
                          (('index', tiny_model, 'lareqa/xquad-r', tmp_path / 'i', '--shard', '2/2'), 'not in 0..1')]:
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert message in done.stderr and 'Traceback' not in done.stderr


def test_train_command(tiny_model, tmp_path, lareqa_dir):
    done = cli('train', tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', '--strategy', 'xx-mono', '--steps', '2',
               '--batch-size', '4', '--temperature', '0.01', '--negative-language', 'query')
    assert done.returncode == 0, done.stderr[-2000:]
    recipe = read_recipe(tmp_path / 'm')
    assert (recipe.strategy, recipe.temperature, recipe.negative_language) == ('xx-mono', 0.01, 'query')


def test_sharded_index_commands_equal_one_process(tiny_model, tmp_path, lareqa_dir):
    for shard in ('0/2', '1/2'):
        done = cli('index', tiny_model, 'lareqa/xquad-r/th/th', tmp_path / f'shard{shard[0]}', '--shard', shard)
        assert done.returncode == 0, done.stderr[-2000:]
    done = cli('merge', tmp_path / 'shard0', tmp_path / 'shard1', '--output', tmp_path / 'merged')
    assert done.returncode == 0, done.stderr[-2000:]
    assert cli('index', tiny_model, 'lareqa/xquad-r/th/th', tmp_path / 'single').returncode == 0
    merged, single = DenseIndex(tmp_path / 'merged'), DenseIndex(tmp_path / 'single')
    assert len(merged) == len(single) == 852 and merged.metadata['model'] == str(tiny_model)
    assert list(merged.payload()[0]) == list(single.payload()[0])
    np.testing.assert_allclose(merged.payload()[1], single.payload()[1], atol=1e-6)


def test_retrieve_evaluate_and_run_commands(tiny_model, tmp_path, lareqa_dir):
    assert cli('index', tiny_model, 'lareqa/xquad-r/th/th', tmp_path / 'th').returncode == 0
    run = tmp_path / 'th.res.gz'
    done = cli('retrieve', tiny_model, tmp_path / 'th', 'lareqa/xquad-r/th/th', '--output', run, '--num-results', 20)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '1190 queries, 23800 results' in done.stdout
    done = cli('evaluate', 'lareqa/xquad-r/th/th', run, '--measures', 'AP', 'nDCG@10')
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'AP' in done.stdout and 'nDCG@10' in done.stdout
    assert cli('evaluate', 'lareqa/xquad-r/th/th', run, '--measures', 'MAP@x').returncode == 2
    broken = tmp_path / 'broken.yaml'
    broken.write_text('name: x\nmodels: {a: {pretrained: m}}\ndatasets: [lareqa/xquad-r]\nmesures: [AP]\n')
    done = cli('run', broken)
    assert done.returncode == 2 and "broken.yaml:4: mesures: unknown key 'mesures'" in done.stderr
    assert 'Traceback' not in done.stderr


def _run_file(path, qrels: list[tuple[str, str]]):
    """A TREC run that ranks each query's judged document first."""
    path.write_text(''.join(f'{qid} Q0 {docno} 1 1.0 hand\n' for qid, docno in qrels))
    return path


def test_evaluate_refuses_a_run_of_another_data_set_and_warns_on_a_partial_one(tmp_path, lareqa_dir):
    import ir_datasets
    th = [(q.query_id, q.doc_id) for q in ir_datasets.load('lareqa/xquad-r/th/th').qrels_iter()]
    de = [(q.query_id, q.doc_id) for q in ir_datasets.load('lareqa/xquad-r/de/de').qrels_iter()]
    done = cli('evaluate', 'lareqa/xquad-r/th/th', _run_file(tmp_path / 'de.res', de), '--measures', 'AP')
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f'pyterrier-hybrid evaluate: error: {tmp_path / "de.res"}: none of its 1190 queries has qrels in '
        'lareqa/xquad-r/th/th (1190 judged queries); is it a run of another data set?']
    done = cli('evaluate', 'lareqa/xquad-r/th/th', _run_file(tmp_path / 'mixed.res', th[:100] + de[:50]),
               '--measures', 'AP')
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'mixed.res: 50 of its 150 queries have no qrels in lareqa/xquad-r/th/th and are not evaluated' in done.stderr


def test_unknown_data_set_id_says_so_in_one_line(tmp_path):
    done = cli('evaluate', 'no-such/dataset', tmp_path / 'run.res')
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: unknown data set id 'no-such/dataset'" in lines[0]


def test_every_subcommand_help_shows_defaults_and_describes_positionals():
    subcommands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {'train', 'index', 'merge', 'retrieve', 'evaluate', 'translate', 'merge-translations', 'run'} <= set(
        subcommands)
    for name, command in subcommands.items():
        text = ' '.join(command.format_help().split())
        for action in command._actions:
            if not action.option_strings:
                assert action.help, f'{name} {action.dest} has no description'
            elif all(action.default is not off for off in (None, False, argparse.SUPPRESS)):
                assert f'(default: {action.default})' in text, f'{name} {action.option_strings[0]} hides its default'
                assert f'(default: {action.default}) (default:' not in text, f'{name} shows a default twice'
    assert ' '.join(cli('evaluate', '--help').stdout.split()).count('(default: ') == 3
