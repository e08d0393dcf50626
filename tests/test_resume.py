"""Resume, refusal and the model card of train(): a real SIGKILL mid-save, a real full disk, leftover checkpoints
of another recipe, output directories the package did not write."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import mounted_tmpfs

import pyterrier_hybrid as ph
from pyterrier_hybrid.training.trainer import checkpoint_problem

pytestmark = pytest.mark.slow  # see pyproject.toml


TINY = {'steps': 1, 'batch_size': 4, 'save_steps': 100}


def worker(model: Path, output: Path, steps: int, kill_at: int = 0) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an installed one
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false',
           'PYTHONPATH': os.pathsep.join([root, *filter(None, [os.environ.get('PYTHONPATH')])])}
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name('train_worker.py')), str(model),
                             str(output), str(steps), str(kill_at)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_kill_during_a_checkpoint_save_then_rerun_resumes_and_ends_bit_identical(tiny_model, tmp_path, lareqa_dir):
    killed, whole = worker(tiny_model, tmp_path / 'm', 4, kill_at=3), worker(tiny_model, tmp_path / 'ref', 4)
    assert killed.wait(600) == -9, killed.stdout.read()[-3000:]
    assert whole.wait(600) == 0, whole.stdout.read()[-3000:]
    checkpoints = tmp_path / 'm.checkpoints'
    assert {'checkpoint-2', 'checkpoint-3'} <= {p.name for p in checkpoints.glob('checkpoint-*')}
    assert checkpoint_problem(checkpoints / 'checkpoint-3') == 'trainer_state.json missing'
    assert checkpoint_problem(checkpoints / 'checkpoint-2') is None
    for name, problem in [('optimizer.pt', 'optimizer.pt truncated'), ('model.safetensors', 'model.safetensors '
                          'truncated'), ('trainer_state.json', 'trainer_state.json unreadable')]:
        copy = shutil.copytree(checkpoints / 'checkpoint-2', tmp_path / 'copies' / name / 'checkpoint-2')
        (copy / name).write_bytes((copy / name).read_bytes()[:-10])
        assert checkpoint_problem(copy).startswith(problem)
    rerun = worker(tiny_model, tmp_path / 'm', 4)
    log = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, log[-3000:]
    assert f'skipping incomplete checkpoint {checkpoints / "checkpoint-3"} (trainer_state.json missing)' in log
    assert (tmp_path / 'm' / 'model.safetensors').read_bytes() == (tmp_path / 'ref' / 'model.safetensors').read_bytes()
    assert ph.read_training_record(tmp_path / 'm')['resumed_from_step'] == 2 and not checkpoints.exists()


@pytest.fixture
def tmpfs(tmp_path):
    yield from mounted_tmpfs(tmp_path / 'small', '64k')


def resize(mount: Path, size: str) -> None:
    subprocess.run(['mount', '-o', f'remount,size={size}', str(mount)], check=True)


def test_a_full_disk_fails_clearly_and_leaves_nothing_half_written(tiny_model, tmpfs, lareqa_dir):
    target = tmpfs / 'm'
    resize(tmpfs, '1m')  # room for the model, not for a checkpoint's training state
    with pytest.raises(OSError, match=r'no space left on the device of .*m\.checkpoints while training; free space'):
        ph.train(tiny_model, 'lareqa/mlqa-r', target, **{**TINY, 'steps': 2, 'save_steps': 1})
    assert [p.name for p in tmpfs.iterdir()] == ['m.checkpoints'], 'a half-written output was left behind'
    assert checkpoint_problem(tmpfs / 'm.checkpoints' / 'checkpoint-1') is not None
    resize(tmpfs, '64m')
    ph.train(tiny_model, 'lareqa/mlqa-r', target, **{**TINY, 'steps': 2, 'save_steps': 1})
    assert ph.read_recipe(target).steps == 2 and [p.name for p in tmpfs.iterdir()] == ['m']


def test_leftover_checkpoints_of_another_recipe_are_refused(tiny_model, tmp_path, lareqa_dir):
    checkpoints = tmp_path / 'm.checkpoints'
    (checkpoints / 'checkpoint-2').mkdir(parents=True)
    old = ph.build_trainer(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', steps=2, batch_size=4).record
    (checkpoints / 'recipe.json').write_text(json.dumps({k: old[k] for k in ph.training.trainer.RUN_IDENTITY}))
    with pytest.raises(FileExistsError, match=rf"{checkpoints} holds checkpoints of another run \(steps: 2 -> 1\).*"
                                              'resume=False'):
        ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', **TINY)
    assert not (tmp_path / 'm').exists()
    with pytest.raises(FileExistsError, match=r"data: \['lareqa/mlqa-r'\] -> \['lareqa/xquad-r'\]; data content"):
        ph.train(tiny_model, 'lareqa/xquad-r', tmp_path / 'm', steps=2, batch_size=4)
    (checkpoints / 'recipe.json').unlink()
    with pytest.raises(FileExistsError, match='recipe.json is missing'):
        ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', **TINY)
    ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', resume=False, **TINY)
    assert ph.read_recipe(tmp_path / 'm').steps == 1 and not checkpoints.exists()


def test_an_output_the_package_did_not_write_is_kept_unless_overwrite(tiny_model, tmp_path, lareqa_dir):
    from pyterrier_hybrid.cli import main
    out = tmp_path / 'm'
    out.mkdir()
    (out / 'notes.txt').write_text('my notes')
    with pytest.raises(FileExistsError, match=f'{out} exists and was not written by pyterrier_hybrid.train'):
        ph.train(tiny_model, 'lareqa/mlqa-r', out, **TINY)
    assert main(['train', str(tiny_model), 'lareqa/mlqa-r', str(out), '--steps', '1']) == 2
    assert (out / 'notes.txt').read_text() == 'my notes' and not (tmp_path / 'm.checkpoints').exists()
    ph.train(tiny_model, 'lareqa/mlqa-r', out, overwrite=True, **TINY)
    assert not (out / 'notes.txt').exists() and ph.read_recipe(out).steps == 1
    trained = (out / 'model.safetensors').stat().st_mtime_ns
    assert ph.train(tiny_model, 'lareqa/mlqa-r', out, **TINY) == out  # already trained: nothing to do
    assert (out / 'model.safetensors').stat().st_mtime_ns == trained
    with pytest.raises(FileExistsError, match=r'trained differently \(steps: 1 -> 2; temperature: 0.05 -> 0.01\)'):
        ph.train(tiny_model, 'lareqa/mlqa-r', out, **{**TINY, 'steps': 2, 'temperature': 0.01})
    assert (out / 'model.safetensors').stat().st_mtime_ns == trained


def test_model_card_states_the_run_and_takes_results(tiny_model, tmp_path, lareqa_dir):
    from sentence_transformers import SentenceTransformer
    out = ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', strategy='xy', steps=2, batch_size=4)
    card = (out / 'README.md').read_text()
    assert 'library_name: sentence-transformers' in card  # sentence-transformers' own card, extended
    assert '- **Strategy:** xy (alpha = 0.0)' in card and f'- **Base model:** `{tiny_model}`' in card
    assert '- **Data:** lareqa/mlqa-r; languages ar, de, en, es, hi, vi, zh; 15,747 rows with hard negatives' in card
    assert '- **Budget:** 2 steps × 4 pairs × 1 device = 8 pairs; max length 48 tokens; wall time' in card
    assert card.index('Training Recipe (pyterrier-hybrid)') < card.index('### Framework Versions')
    table = '| setting | MAP |\n|---|---|\n| Mo | 0.512 |\n| Cr | 0.401 |\n| Mul | 0.377 |'
    ph.add_model_card_results(out, table)
    ph.add_model_card_results(out, table.replace('0.377', '0.388'))
    card = (out / 'README.md').read_text()
    assert card.count('## Evaluation') == 1 and '| Mul | 0.388 |' in card and '0.377' not in card
    assert card.index('| Mo | 0.512 |') < card.index('## Training Details')
    assert sorted(p.name for p in out.iterdir() if p.name.startswith('.')) == []
    assert SentenceTransformer(str(out), device='cpu').encode(['eine Frage']).shape == (1, 32)
    with pytest.raises(ValueError, match='markdown_table is empty'):
        ph.add_model_card_results(out, '  ')
    with pytest.raises(FileNotFoundError, match='is not a sentence-transformers checkpoint'):
        ph.add_model_card_results(tmp_path, table)
