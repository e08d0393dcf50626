"""Training on a tiny model and real MLQA-R items: checkpoints, recipe, determinism, bad input, resume, DDP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import mmarco_shaped

import pyterrier_hybrid as ph
from pyterrier_hybrid.training import trainer as training


def weights(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path / 'model.safetensors'))


def test_trained_checkpoint_loads_everywhere_and_records_its_recipe(tiny_model, tmp_path, lareqa_dir):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel
    out = ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'hybrid', steps=4, batch_size=8, alpha=0.3)
    recipe = ph.read_recipe(out)
    assert recipe == ph.Recipe(strategy='hybrid', alpha=0.3, steps=4, batch_size=8)
    record = ph.read_training_record(out)
    assert record['data'] == ['lareqa/mlqa-r'] and record['base_model'] == str(tiny_model)
    assert record['trained_languages'] == ['ar', 'de', 'en', 'es', 'hi', 'vi', 'zh'] and record['hard_negatives']
    assert not (tmp_path / 'hybrid.checkpoints').exists()
    encoder = ph.HybridEncoder.from_pretrained(out)
    assert encoder.encoder_config.query_prefix == 'query: '
    reference = SentenceTransformer(str(out), device='cpu').encode(['eine Frage'], prompt_name='query')
    assert float((encoder.encode_queries(['eine Frage']) * reference).sum()) >= 0.9999
    AutoModel.from_pretrained(out)
    before, after = weights(tiny_model), weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before), 'training changed nothing'


def test_same_seed_same_model(tiny_model, tmp_path, lareqa_dir):
    a = ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'a', steps=2, batch_size=4, strategy='xy', seed=7)
    b = ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'b', steps=2, batch_size=4, strategy='xy', seed=7)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ph.read_recipe(a).effective_alpha == 0.0


@pytest.mark.parametrize('kwargs,message', [
    ({'alpha': 1.2}, r'alpha: must lie in \[0, 1\]'),
    ({'strategy': 'xx-mono', 'alpha': 0.5}, 'fixes alpha = 1.0'),
    ({'strategy': 'code-switch'}, 'unknown strategy'),
    ({'languages': ['fr']}, "no items in languages fr"),
    ({'languages': ['de'], 'strategy': 'xy'}, 'cross-lingual batches .* use alpha=1'),
    ({'temperature': 0}, 'temperature: must be positive'),
    ({'negative_language': 'doc'}, "negative_language: unknown value 'doc'; valid: passage, query, mined"),
    ({'steps': 0}, 'steps: must be a positive number, not 0'),
    ({'steps': -5}, 'steps: must be a positive number, not -5'),
    ({'steps': 'forty'}, "steps: expected an integer, not 'forty'"),
])
def test_bad_input_is_refused_before_training(tiny_model, tmp_path, lareqa_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'out', **{'steps': 2, 'batch_size': 4, **kwargs})
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('temperature,mini_batch_size', [(0.01, None), (0.05, 2)])
def test_temperature_sets_the_infonce_scale(tiny_model, tmp_path, lareqa_dir, temperature, mini_batch_size):
    run = ph.build_trainer(tiny_model, 'lareqa/mlqa-r', tmp_path / 'out', steps=2, batch_size=4,
                           temperature=temperature, mini_batch_size=mini_batch_size)
    assert run.trainer.loss.scale == pytest.approx(1 / temperature)
    assert type(run.trainer.loss).__name__.startswith('Cached') == bool(mini_batch_size)
    assert run.record['recipe']['temperature'] == temperature


def test_progress_logs_carry_loss_and_throughput(tiny_model, tmp_path, lareqa_dir):
    from transformers import TrainerCallback
    shown = []

    class Recorder(TrainerCallback):  # runs where the progress bar does: after ThroughputCallback
        def on_log(self, args, state, control, logs=None, **kwargs):
            shown.append(dict(logs))

    run = ph.build_trainer(tiny_model, 'lareqa/mlqa-r', tmp_path / 'out', steps=3, batch_size=4, save_steps=10)
    run.trainer.add_callback(Recorder())
    run.trainer.train()
    logged = [entry for entry in shown if 'loss' in entry]
    assert len(logged) == 3  # one log line per step at this length
    assert all(entry['pairs_per_s'] > 0 for entry in logged)


def test_a_model_trained_before_a_recipe_option_existed_is_still_the_same_run(tiny_model, tmp_path, lareqa_dir):
    """A checkpoint recorded before ``distillation`` and ``teacher`` existed trained with their defaults."""
    out = ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', steps=2, batch_size=4)
    config = out / 'config_sentence_transformers.json'
    data = json.loads(config.read_text())
    for key in ('distillation', 'teacher'):
        del data['pyterrier_hybrid']['recipe'][key]
    config.write_text(json.dumps(data))
    trained = (out / 'model.safetensors').stat().st_mtime_ns
    assert ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', steps=2, batch_size=4) == out
    assert (out / 'model.safetensors').stat().st_mtime_ns == trained, 'not trained again'


def test_empty_or_malformed_data(tiny_model, tmp_path):
    empty = tmp_path / 'empty.jsonl'
    empty.write_text('')
    with pytest.raises(ValueError, match="source 'empty' has no items"):
        ph.train(tiny_model, empty, tmp_path / 'out', steps=2, batch_size=4)
    broken = tmp_path / 'broken.jsonl'
    broken.write_text('{"id": "1", "lang": "en", "query": "q", "positive": "p"}\n{"id": "2", "lang": "en"}\n')
    with pytest.raises(ValueError, match='broken.jsonl:2: not a training item'):
        ph.read_items(broken)
    with pytest.raises(FileNotFoundError, match='neither a JSONL file'):
        ph.train(tiny_model, tmp_path / 'missing.jsonl', tmp_path / 'out', steps=2)


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_model, tmp_path, lareqa_dir, monkeypatch):
    class SimulatedCrashError(Exception):
        pass

    def stop_at_step_3(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise SimulatedCrashError

    with monkeypatch.context() as patch:
        patch.setattr(training.ThroughputCallback, 'on_step_end', stop_at_step_3, raising=False)
        with pytest.raises(SimulatedCrashError):
            ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', steps=4, batch_size=4, save_steps=2)
    assert [p.name for p in (tmp_path / 'm.checkpoints').glob('checkpoint-*')] == ['checkpoint-2']
    assert not (tmp_path / 'm').exists()
    resumed = []
    original = training.ThroughputCallback.on_train_begin

    def record(self, args, state, control, **kwargs):
        resumed.append(state.global_step)
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(training.ThroughputCallback, 'on_train_begin', record)
    ph.train(tiny_model, 'lareqa/mlqa-r', tmp_path / 'm', steps=4, batch_size=4, save_steps=2)
    assert (tmp_path / 'm' / 'model.safetensors').is_file() and not (tmp_path / 'm.checkpoints').exists()


def test_items_round_trip_and_lareqa_items(tmp_path, lareqa_dir):
    items = ph.lareqa_items('mlqa-r', langs=['de'])
    assert len(items) == 512 and all(i.lang == 'de' for i in items)
    first = items[0]
    assert first.positive not in first.negatives and first.positive.strip()
    ph.write_items(items[:5], tmp_path / 'items.jsonl')
    assert ph.read_items(tmp_path / 'items.jsonl') == items[:5]


def test_irds_items_align_languages_by_query_id(lareqa_dir):
    import ir_datasets
    items = ph.irds_items({'en': mmarco_shaped('en'), 'de': mmarco_shaped('de')}, limit=4)
    en, de = [i for i in items if i.lang == 'en'], [i for i in items if i.lang == 'de']
    assert len(en) == 4 and sorted(i.id for i in de) == sorted(i.id for i in en)  # the first language picks
    for lang, versions in (('en', en), ('de', de)):
        source = ir_datasets.load(f'lareqa/xquad-r/{lang}/{lang}')
        store, queries = source.docs_store(), {q.query_id: q.text for q in source.queries_iter()}
        answers = {q.query_id: q.doc_id for q in source.qrels_iter()}
        for item in versions:
            answer = answers[f'{lang}-{item.id}']
            assert item.query == queries[f'{lang}-{item.id}'] and item.positive == store.get(answer).text
            assert len(item.negatives) == 1 and item.negatives[0] != item.positive
    rows = ph.build_rows({'xquad': items})
    assert len(rows) == 4 * 4 and set(zip(rows.query_lang, rows.passage_lang)) == {
        ('en', 'en'), ('en', 'de'), ('de', 'en'), ('de', 'de')}
    with pytest.raises(ValueError, match='lareqa/xquad-r/en/en has no docpairs'):
        ph.irds_items({'en': 'lareqa/xquad-r/en/en'})


def test_torchrun_two_processes_see_disjoint_batches_and_end_equal(tiny_model, tmp_path, lareqa_dir):
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an installed one
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '',
           'PYTHONPATH': os.pathsep.join([root, *filter(None, [os.environ.get('PYTHONPATH')])])}
    worker = Path(__file__).with_name('ddp_worker.py')
    done = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                           '--master_port', '29533', str(worker), str(tiny_model), 'lareqa/mlqa-r', str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert ranks[0]['world_size'] == 2
    seen = [{a for batch in r['batches'][:3] for a in batch} for r in ranks]
    assert len(ranks[0]['batches']) >= 3 and seen[0] and seen[1]
    assert not seen[0] & seen[1], 'both ranks trained on the same examples'
    assert ranks[0]['weights'] == ranks[1]['weights'], 'the ranks ended with different weights'
