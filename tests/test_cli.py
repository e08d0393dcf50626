"""The pyterrier-hybrid command, run as a user would: in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from pyterrier_hybrid import DenseIndex, read_recipe


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
