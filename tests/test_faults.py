"""Bad input and injected faults (#16): every case is refused with an exception (CLI: exit 2 and one error line, no
traceback) whose message names the problem, and a killed, starved or doubled writer leaves nothing half written.

The table of bad inputs is tests/faults_cases.py. The faults here: kill -9 of ``index`` and of ``run``, a full
disk under an index, a TREC run and an experiment, two concurrent writers of a translate-train output. Two builds
racing into one index path are tests/test_index_safety.py's
(test_a_second_build_into_the_same_path_fails_instead_of_replacing_the_first); kill -9 of ``train`` is the training
tests'.
"""
from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, mounted_tmpfs
from faults_cases import API_CASES, CLI_CASES, DATASET, DOCS, YAML_CASES, CliCase, Ctx

import pyterrier_hybrid as ph
from pyterrier_hybrid.experiment.config import ExperimentError, load_experiment

pytestmark = pytest.mark.slow  # see pyproject.toml


ENV = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'PYTHONUNBUFFERED': '1'}


def cli_command(*args) -> list[str]:
    return [sys.executable, '-m', 'pyterrier_hybrid', *map(str, args)]


def cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=ENV)


def assert_one_error_line(done: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit 2, no traceback, and one error line (the last, after any usage or progress lines) matching ``pattern``."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert 'Traceback' not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if ': error: ' in line]
    assert errors == lines[-1:], done.stderr[-3000:]
    assert errors[0].startswith('pyterrier-hybrid') and re.search(pattern, errors[0]), errors[0]


@pytest.fixture(scope='module')
def shared_index(tiny_encoder, tmp_path_factory) -> Path:
    """One small index of the tiny model, built once; cases that damage it work on copies."""
    index = ph.DenseIndex(tmp_path_factory.mktemp('shared') / 'tiny.index')
    (tiny_encoder >> index).index(DOCS)
    return index.index_path


# --- the table: Python API, CLI, experiment files --------------------------------------------------------------


@pytest.mark.parametrize('case', API_CASES, ids=[c.name for c in API_CASES])
def test_api_refuses_bad_input(case, tiny_model, tiny_encoder, shared_index, tmp_path):
    with pytest.raises(case.error) as raised:
        case.run(Ctx(tiny_model, tiny_encoder, shared_index, tmp_path))
    error = raised.value
    messages = [str(error)] + ([error.args[0]] if isinstance(error, KeyError) and error.args else [])  # unquoted
    assert any(re.search(case.pattern, message) for message in messages), messages


@pytest.mark.parametrize('case', YAML_CASES, ids=[c.name for c in YAML_CASES])
def test_experiment_file_refuses_bad_input(case, tmp_path):
    path = tmp_path / 'exp.yaml'
    path.write_text(case.text)
    with pytest.raises(ExperimentError) as raised:
        load_experiment(path)
    assert re.search(case.pattern, str(raised.value)), str(raised.value)


def test_a_byte_order_mark_is_not_part_of_the_first_item_or_word(tmp_path):
    items = tmp_path / 'items.jsonl'
    items.write_bytes(b'\xef\xbb\xbf' + json.dumps({'id': 'q1', 'lang': 'de', 'query': 'Wer?', 'positive': 'Er.'})
                      .encode() + b'\n')
    assert ph.read_items(items) == [ph.ParallelItem('q1', 'de', 'Wer?', 'Er.')]
    lexicon = tmp_path / 'en-de.txt'
    lexicon.write_bytes(b'\xef\xbb\xbfhouse haus\n')
    assert ph.load_lexicon(lexicon).entries == {'house': ('haus',)}


def _cli_files(tmp: Path, model: Path, index: Path) -> dict[str, str]:
    """The files the CLI cases name: a corrupt index and checkpoint, a run of another data set, experiment files."""
    import ir_datasets
    corrupt = tmp / 'corrupt.index'
    shutil.copytree(index, corrupt)
    (corrupt / 'vecs.f4').write_bytes(b'\0' * 12)
    corrupt_model = tmp / 'corrupt-model'
    shutil.copytree(model, corrupt_model)
    (corrupt_model / 'model.safetensors').write_bytes((model / 'model.safetensors').read_bytes()[:1000])
    qrels = list(ir_datasets.load('lareqa/xquad-r/de/de').qrels_iter())[:3]
    other_run = tmp / 'de.res'
    other_run.write_text(''.join(f'{q.query_id} Q0 {q.doc_id} 1 1.0 hand\n' for q in qrels))
    (tmp / 'garbage.res').write_text('this is not a run\n')
    files = {'tmp': str(tmp), 'model': str(model), 'index': str(index), 'corrupt': str(corrupt),
             'corrupt_model': str(corrupt_model), 'other_run': str(other_run)}
    for case in YAML_CASES:
        path = tmp / case.name / 'exp.yaml'
        path.parent.mkdir()
        path.write_text(case.text)
        files[f'yaml:{case.name}'] = str(path)
    return files


CLI_YAML = ('steps-forty', 'unknown-measure', 'unknown-top-key')
CLI_TABLE = CLI_CASES + [CliCase(f'run-yaml-{case.name}', ('run', f'{{yaml:{case.name}}}'),
                                 'run: error: .*' + case.pattern) for case in YAML_CASES if case.name in CLI_YAML]


@pytest.fixture(scope='module')
def cli_results(tiny_model, shared_index, tmp_path_factory, lareqa_dir) -> dict[str, subprocess.CompletedProcess]:
    """Every CLI case, run in subprocesses three at a time (each starts a Python, most import torch)."""
    files = _cli_files(tmp_path_factory.mktemp('cli'), tiny_model, shared_index)
    fill = lambda arg: re.sub(r'\{([a-z_:-]+)\}', lambda m: files[m[1]], arg)  # noqa: E731
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = {case.name: pool.submit(cli, *map(fill, case.args)) for case in CLI_TABLE}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize('case', CLI_TABLE, ids=[c.name for c in CLI_TABLE])
def test_cli_refuses_bad_input_in_one_line(case, cli_results):
    assert_one_error_line(cli_results[case.name], case.pattern)


# --- kill -9 ---------------------------------------------------------------------------------------------------


def _kill_when(process: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL ``process`` as soon as ``ready()``; fail if it ends first."""
    while not ready():
        assert process.poll() is None, f'{what} ended before it could be killed: {process.stderr.read()[-2000:]}'
        time.sleep(0.01)
    process.kill()
    assert process.wait(60) == -signal.SIGKILL


def test_index_killed_while_encoding_leaves_no_index_and_the_rerun_equals_an_uninterrupted_build(
        tiny_model, tmp_path, lareqa_dir):
    target, reference = tmp_path / 'killed' / 'th.index', tmp_path / 'whole' / 'th.index'
    whole = subprocess.Popen(cli_command('index', tiny_model, DATASET, reference), env=ENV, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = subprocess.Popen(cli_command('index', tiny_model, DATASET, target), env=ENV, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # the build lock is taken when the first batch is asked for: the process is encoding from then on
    _kill_when(killed, lambda: (target.parent / '.th.index.lock').exists() or any(
        target.parent.glob('.th.index.building-*')), 'index')
    assert whole.wait(600) == 0, whole.stderr.read()[-2000:]
    assert not target.exists() and not list(target.parent.glob('.th.index.building-*'))
    done = cli('index', tiny_model, DATASET, target)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in target.parent.iterdir()) == ['th.index']
    rebuilt, uninterrupted = ph.DenseIndex(target), ph.DenseIndex(reference)
    assert len(rebuilt) == 852
    assert list(rebuilt.payload()[0]) == list(uninterrupted.payload()[0])
    np.testing.assert_array_equal(rebuilt.payload()[1], uninterrupted.payload()[1])


EXPERIMENT = '''
    name: two-languages
    output: out
    models:
      tiny: {{pretrained: {model}, batch_size: 256}}  # a tiny model: the time goes on overhead per batch
    datasets: [lareqa/xquad-r]
    languages: [de, th]
    settings: [Mo, Cr, Mul]
    measures: [AP, nDCG@10, RankDistance]
    run_depth: 5
'''


def _experiment(folder: Path, model: Path) -> Path:
    folder.mkdir()
    (folder / 'exp.yaml').write_text(textwrap.dedent(EXPERIMENT.format(model=model)))
    return folder / 'exp.yaml'


def _leftovers(folder: Path) -> list[str]:
    """Temporary files and build directories that a writer left behind."""
    return [str(p) for p in folder.rglob('*') if p.name.startswith('.tmp-') or '.building-' in p.name
            or '.saving-' in p.name]


def _run_contents(folder: Path) -> dict[str, bytes]:
    """The experiment's tables (bytes) and TREC runs (decompressed bytes); not report.md, which records the time
    the run took."""
    tables = {str(p.relative_to(folder)): p.read_bytes() for p in (folder / 'results').glob('*.*')
              if p.suffix in ('.csv', '.md') and p.name != 'report.md'}
    runs = {str(p.relative_to(folder)): gzip.decompress(p.read_bytes()) for p in folder.glob('runs-top*/*/*.res.gz')}
    return {**tables, **runs}


def test_run_killed_mid_evaluation_is_completed_by_a_rerun_identical_to_an_uninterrupted_run(
        tiny_model, tmp_path, lareqa_dir):
    killed_file, whole_file = _experiment(tmp_path / 'killed', tiny_model), _experiment(tmp_path / 'whole', tiny_model)
    whole = subprocess.Popen(cli_command('run', whole_file), env=ENV, text=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    killed = subprocess.Popen(cli_command('run', killed_file), env=ENV, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    _kill_when(killed, lambda: killed.stdout.readline().startswith('evaluating '), 'run')
    out = killed_file.parent / 'out'
    assert not (out / 'results').exists() and not (out / 'perquery').exists()
    assert _leftovers(out) == []
    assert whole.wait(600) == 0, whole.stderr.read()[-2000:]
    done = cli('run', killed_file)
    assert done.returncode == 0, done.stderr[-2000:]
    rerun, uninterrupted = _run_contents(out), _run_contents(whole_file.parent / 'out')
    assert len(rerun) == 4 + 6  # settings and summary tables (csv, md); runs: Mo de, th; Cr de-th, th-de; Mul de, th
    assert rerun == uninterrupted


# --- disk full -------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where it cannot be mounted), unmounted afterwards."""
    yield from mounted_tmpfs(tmp_path / 'small', '2m')


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` with one file until about ``leave`` bytes stay free."""
    stat = os.statvfs(disk)
    (disk / 'filler').write_bytes(b'\0' * max(0, stat.f_bavail * stat.f_frsize - leave))


def _no_space(message: str) -> bool:
    return 'No space left' in message or 'ENOSPC' in message


def test_an_index_on_a_full_disk_is_an_error_and_leaves_nothing(small_disk):
    vectors = np.random.default_rng(0).normal(size=(20_000, 32)).astype(np.float32)  # 2.5 MB of vectors
    with pytest.raises(OSError) as raised:
        ph.DenseIndex(small_disk / 'big.index').indexer().index({'docno': f'd{i}', 'doc_vec': v}
                                                                for i, v in enumerate(vectors))
    assert _no_space(str(raised.value)), raised.value
    assert list(small_disk.iterdir()) == []


def test_a_trec_run_on_a_full_disk_is_exit_2_and_leaves_nothing(tiny_model, shared_index, small_disk, lareqa_dir):
    _fill(small_disk, leave=64 * 1024)  # the run: 1190 queries x 9 documents, about 500 kB
    done = cli('retrieve', tiny_model, shared_index, DATASET, '--output', small_disk / 'th.res', '--num-results', 9)
    assert_one_error_line(done, r'retrieve: error: .*No space left on device')
    assert sorted(p.name for p in small_disk.iterdir()) == ['filler']


def test_experiment_results_on_a_full_disk_are_an_error_and_nothing_is_half_written(
        tiny_model, small_disk, tmp_path, lareqa_dir):
    experiment = tmp_path / 'exp.yaml'
    experiment.write_text(textwrap.dedent(f'''
        name: th
        output: {small_disk / 'out'}
        models:
          tiny: {{pretrained: {tiny_model}}}
        datasets: [{DATASET}]
        measures: [AP, RankDistance]
        run_depth: 5
    '''))
    ph.run_experiment(experiment, log=lambda line: None)  # encodings and runs: what a second run reuses
    complete = {p: p.read_bytes() for p in (small_disk / 'out' / 'results').glob('*.*')}
    perquery, = (small_disk / 'out' / 'perquery').rglob('*.csv.gz')
    pages = -(-perquery.stat().st_size // 4096)
    shutil.rmtree(small_disk / 'out' / 'results')
    perquery.unlink()
    _fill(small_disk, leave=(pages + 1) * 4096)  # room for the per-query values and one small table
    with pytest.raises(OSError) as raised:
        ph.run_experiment(experiment, log=lambda line: None)
    assert _no_space(str(raised.value)), raised.value
    assert _leftovers(small_disk) == []
    written = {p: p.read_bytes() for p in (small_disk / 'out' / 'results').glob('*.*')}
    assert perquery.exists() and 0 < len(written) < len(complete), sorted(written)
    assert all(complete[p] == data for p, data in written.items()), 'a results file is half written'


# --- concurrent writers ----------------------------------------------------------------------------------------


def _translate(source: Path, output: Path, lexicon: Path) -> None:
    ph.translate_train(source, output, ph.LexiconTranslator([ph.load_lexicon(lexicon)]), ['de'], progress=False)


def test_two_translate_train_writers_of_one_output_leave_one_whole_output(tmp_path, lareqa_dir):
    import multiprocessing
    source = tmp_path / 'en.jsonl'
    ph.write_items(ph.lareqa_items('xquad-r', ['en'])[:300], source)
    lexicon = tmp_path / 'en-de.txt'
    with open(SHARED / 'data' / 'lexicons' / 'en-de.txt', encoding='utf-8') as f:
        lexicon.write_text(''.join(line for _, line in zip(range(20_000), f)), encoding='utf-8')
    _translate(source, tmp_path / 'alone' / 'train.jsonl', lexicon)
    fork = multiprocessing.get_context('fork')
    writers = [fork.Process(target=_translate, args=(source, tmp_path / 'both' / 'train.jsonl', lexicon))
               for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(300)
    assert [writer.exitcode for writer in writers] == [0, 0]
    both, alone = tmp_path / 'both', tmp_path / 'alone'
    assert ph.read_items(both / 'train.jsonl') == ph.read_items(alone / 'train.jsonl')
    manifest = json.loads((both / 'train.manifest.json').read_text())
    assert manifest['counts'] == {'en': 300, 'de': 300}
    assert _leftovers(both) == [] and sorted(p.name for p in both.iterdir()) == sorted(
        p.name for p in alone.iterdir())
