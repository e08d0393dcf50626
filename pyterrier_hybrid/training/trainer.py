"""Fine-tune a bi-encoder with hybrid batches (arXiv 2408.10536) or its baselines, on sentence-transformers.

Strategies (``strategy=``):

``hybrid``   monolingual batches with probability ``alpha`` (default 0.5), cross-lingual ones otherwise;
``xx-mono``  every batch monolingual (alpha = 1);
``xy``       every batch cross-lingual (alpha = 0);
``en-en``    English items only, monolingual.

The model is a dual encoder with shared weights, scored by cosine similarity and trained with InfoNCE
(sentence-transformers' ``MultipleNegativesRankingLoss``, scale = 1 / temperature) over in-batch and hard
negatives; ``mini_batch_size`` switches to its GradCache variant for large batches in small memory. Batches come
from :class:`~pyterrier_hybrid.sampler.HybridBatchSampler`. The output directory is an ordinary
sentence-transformers checkpoint with the recipe under ``pyterrier_hybrid`` in
``config_sentence_transformers.json`` and in its model card (``README.md``).

A run is identified by its recipe, base model and training data (the digest of its rows). Trainer checkpoints
record that identity in ``{output_dir}.checkpoints/recipe.json``: a rerun resumes only a run with the same
identity, from its newest complete checkpoint (a save cut short by a kill or a full disk is skipped, with a
warning). An output directory is only replaced with ``overwrite=True``; one already trained with the same identity
is returned as it is.

What a run trains is a :class:`~pyterrier_hybrid.training.recipe.Recipe`; its inputs are the base model and the
training data. Options that only say how the run executes (``save_steps``, the trainer's own arguments) are not
part of the recipe.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import struct
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sentence_transformers import SentenceTransformerTrainingArguments
from transformers import TrainerCallback

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.checkpoints import checkpoint_digest
from pyterrier_hybrid.data import lareqa
from pyterrier_hybrid.data.items import ParallelItem, lareqa_items, read_items

from .base_vectors import encoder_of, model_identity, prompts
from .recipe import CodeSwitching, Recipe
from .rows import TrainingRows, build_rows

TrainingData = str | os.PathLike | Iterable[ParallelItem] | Mapping[str, Iterable[ParallelItem]]

log = logging.getLogger('pyterrier_hybrid')


def load_training_data(data: TrainingData, code_switching: CodeSwitching | None = None
                       ) -> dict[str, list[ParallelItem]]:
    """Named sources of items from: a LAReQA collection name (``'lareqa/mlqa-r'``), a JSONL path, items, or a
    mapping of source name to items (batches are drawn per source, in proportion to size).

    With ``code_switching``, each source is replaced by its English items plus their code-switched copies
    (language ``cs``): the ACS training set of arXiv 2305.05295, which the realised switch ratio per language and
    the lexicons' coverage are logged for; with its ``keep_translations``, by all its items plus the copies."""
    if isinstance(data, Mapping):
        sources = {name: list(items) for name, items in data.items()}
    elif isinstance(data, (str, os.PathLike)):
        name = str(data)
        collection = name.removeprefix('lareqa/')
        if collection in lareqa.COLLECTIONS:
            sources = {name: lareqa_items(collection)}
        elif not Path(name).is_file():
            raise FileNotFoundError(f'training data {name!r} is neither a JSONL file nor one of '
                                    f'{", ".join("lareqa/" + c for c in lareqa.COLLECTIONS)}')
        else:
            sources = {Path(name).stem: read_items(name)}
    else:
        sources = {'items': list(data)}
    if code_switching is None:
        return sources
    return {name: _with_code_switched_copies(items, code_switching) for name, items in sources.items()}


def _with_code_switched_copies(items: list[ParallelItem], switching: CodeSwitching) -> list[ParallelItem]:
    from pyterrier_hybrid.data.code_switching import CodeSwitcher, code_switched_items, load_lexicon
    english = [i for i in items if i.lang == 'en']
    switcher = CodeSwitcher([load_lexicon(p) for p in switching.lexicons], p=switching.p, seed=switching.seed)
    switched = code_switched_items(english, queries=switcher if switching.side in ('both', 'query') else None,
                                   passages=switcher if switching.side in ('both', 'passage') else None, lang='cs')
    ratios = ', '.join(f'{lang} {switcher.stats.ratio(lang):.1%}' for lang in switcher.target_langs)
    log.info('code-switched %d items: lexicon coverage %.1f%% of words, switched %.1f%% of known words (%s)',
             len(switched), 100 * switcher.stats.coverage(), 100 * switcher.stats.ratio(), ratios)
    return (items if switching.keep_translations else english) + switched


class ThroughputCallback(TrainerCallback):
    """Adds training pairs per second to the trainer's logs (and so to its progress bar)."""

    def __init__(self, batch_size: int):
        self.batch_size, self.start, self.start_step = batch_size, None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.start is not None and state.global_step > self.start_step:
            pairs = (state.global_step - self.start_step) * self.batch_size * args.world_size
            logs['pairs_per_s'] = round(pairs / (time.perf_counter() - self.start), 2)


def prepare(model, data: TrainingData, recipe: Recipe, batch_size: int, *, vector_cache: Path | None = None,
            base_id: str = ''):
    """Rows, dataset, loss and batch sampler for one run; every input error is raised here, before training.

    Mined negatives and distillation use frozen models' vectors of the training texts (the base ``model``'s,
    whose checkpoint digest is ``base_id``, and the teacher's), cached in ``vector_cache``."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    from .sampler import HybridBatchSampler
    sources = load_training_data(data, recipe.code_switching)
    languages = ['en'] if recipe.strategy == 'en-en' else recipe.languages
    if languages is not None:
        sources = {name: [i for i in items if i.lang in languages] for name, items in sources.items()}
    for name, items in sources.items():
        if not items:
            raise ValueError(f'training source {name!r} has no items' +
                             (f' in languages {", ".join(languages)}' if languages else ''))
    rows = build_rows(sources, seed=recipe.seed, negative_language=recipe.negative_language)
    if recipe.negative_language == 'mined':
        from .mining import mine_negatives
        rows = mine_negatives(rows, sources, encoder_of(model), seed=recipe.seed, cache=vector_cache,
                              model_id=model_identity(model, base_id))
    columns = {'anchor': rows.anchor, 'positive': rows.positive}
    if rows.negative is not None:
        columns['negative'] = rows.negative
    if recipe.distillation:
        from .distillation import teacher_targets
        teacher, teacher_id = _teacher(model, recipe, base_id)
        queries, answers, targets = teacher_targets(rows, teacher, teacher_id, vector_cache)
        columns['label'] = targets.tolist()  # per row: its query's and answer's rows in the teacher's matrices
    dataset = Dataset.from_dict(columns)
    sampler = functools.partial(HybridBatchSampler, rows=rows, alpha=recipe.effective_alpha)
    sampler(dataset, batch_size=batch_size, drop_last=True, seed=recipe.seed)  # validates
    if recipe.mini_batch_size:
        loss = CachedMultipleNegativesRankingLoss(model, scale=1 / recipe.temperature,
                                                  mini_batch_size=recipe.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=1 / recipe.temperature)
    if recipe.distillation:
        from .distillation import DistilledInfoNCE
        loss = DistilledInfoNCE(loss, queries, answers, recipe.distillation)
    return rows, dataset, loss, sampler


def _teacher(model, recipe: Recipe, base_id: str) -> tuple[Any, str]:
    """The distillation teacher and its checkpoint digest: the base ``model`` itself before training (frozen by
    being used only now), or the recipe's ``teacher``, whose vectors must have the student's dimension."""
    if recipe.teacher is None:
        return model, base_id
    from sentence_transformers import SentenceTransformer
    teacher = SentenceTransformer(recipe.teacher, device=str(model.device))
    teacher.max_seq_length = model.max_seq_length
    dims = teacher.get_sentence_embedding_dimension(), model.get_sentence_embedding_dimension()
    if dims[0] != dims[1]:
        raise ValueError(f'the distillation teacher {recipe.teacher} gives {dims[0]}-dimensional vectors and the '
                         f'student {dims[1]}-dimensional ones; distil from a teacher of the same dimension')
    return teacher, checkpoint_digest(recipe.teacher)


class TrainingRun(NamedTuple):
    """A configured run: the sentence-transformers trainer, what to record, where checkpoints go."""
    trainer: Any  # SentenceTransformerTrainer
    record: dict
    checkpoints: Path


def _split_options(recipe: Recipe | None, options: dict[str, Any]) -> tuple[Recipe, dict[str, Any]]:
    """``recipe`` updated by the recipe fields among ``options``; the rest are trainer arguments."""
    names = {f.name for f in dataclasses.fields(Recipe)}
    changes = {k: v for k, v in options.items() if k in names}
    base = (recipe or Recipe()).to_dict()
    return Recipe.from_mapping({**base, **changes}), {k: v for k, v in options.items() if k not in names}


def build_trainer(model: str | os.PathLike, data: TrainingData, output_dir: str | os.PathLike,
                  recipe: Recipe | None = None, *, save_steps: int = 500, **options) -> TrainingRun:
    """Configure (and validate) a run without starting it; :func:`train` documents the arguments."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    recipe, training_args = _split_options(recipe, options)
    output_dir = Path(output_dir)
    checkpoints = output_dir.with_name(output_dir.name + '.checkpoints')
    defaults = dict(save_total_limit=2, logging_steps=max(1, min(50, recipe.steps // 20)), report_to='none',
                    dataloader_drop_last=True, warmup_steps=math.ceil(recipe.steps / 10),
                    dataloader_pin_memory=_cuda())
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints), max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, seed=recipe.seed, data_seed=recipe.seed, save_steps=save_steps,
        **{**defaults, **training_args})
    st_model = SentenceTransformer(str(model), device='cuda' if _cuda() else 'cpu')
    if recipe.max_length:
        st_model.max_seq_length = recipe.max_length
    if recipe.freeze_embeddings:
        st_model[0].auto_model.get_input_embeddings().requires_grad_(False)
    query_prompt, passage_prompt = prompts(st_model)
    args.prompts = {'anchor': query_prompt, 'positive': passage_prompt, 'negative': passage_prompt}
    frozen = {} if recipe.negative_language != 'mined' and not recipe.distillation else {  # shared by the seeds
        'vector_cache': output_dir.parent / 'base-vectors', 'base_id': checkpoint_digest(model)}
    rows, dataset, loss, sampler = prepare(st_model, data, recipe, recipe.batch_size, **frozen)
    args.batch_sampler = sampler
    trainer = SentenceTransformerTrainer(model=st_model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[ThroughputCallback(recipe.batch_size)])
    record = {
        'recipe': recipe.to_dict(), 'recipe_digest': recipe.digest(), 'base_model': str(model),
        'data': sorted(set(rows.source.tolist())), 'data_digest': _rows_digest(rows),
        'trained_languages': sorted(set(rows.query_lang.tolist())), 'max_length': st_model.max_seq_length,
        'world_size': args.world_size, 'hard_negatives': rows.negative is not None, 'train_rows': len(rows)}
    return TrainingRun(trainer, record, checkpoints)


def train(model: str | os.PathLike, data: TrainingData, output_dir: str | os.PathLike, recipe: Recipe | None = None,
          *, resume: bool = True, overwrite: bool = False, save_steps: int = 500, **options) -> Path:
    """Fine-tune ``model`` on ``data`` with ``recipe`` and save it to ``output_dir``.

    Args:
        model: a sentence-transformers or Hugging Face checkpoint (Hub id or path).
        data: ``'lareqa/mlqa-r'``, a JSONL path of :class:`~pyterrier_hybrid.ParallelItem`, items, or
            ``{source name: items}``.
        output_dir: where the trained checkpoint goes; trainer checkpoints live in ``{output_dir}.checkpoints``
            until training finishes, and an interrupted run resumes from the newest complete one of them.
        recipe: what to train (:class:`~pyterrier_hybrid.Recipe`; its defaults when omitted).
        resume: resume from the checkpoints of an interrupted run of the same recipe, base model and data
            (``False``: delete them and start over).
        overwrite: replace an existing ``output_dir`` that holds something else (another recipe, another model,
            other files); without it that is an error, raised before training.
        save_steps: checkpoint every this many steps.
        options: :class:`~pyterrier_hybrid.Recipe` fields overriding ``recipe`` (``strategy='xy', steps=40``),
            and any other :class:`~sentence_transformers.SentenceTransformerTrainingArguments` field.

    Returns:
        The output directory, loadable by ``HybridEncoder.from_pretrained``, ``SentenceTransformer`` and
        ``transformers.AutoModel``; :func:`read_recipe` gives back its recipe. If it already holds this recipe
        trained from this base model on this data, it is returned without training.

    Raises:
        FileExistsError: ``output_dir`` holds something else and ``overwrite`` is false, or the checkpoints
            directory holds a run with a different recipe, base model or data and ``resume`` is true.
    """
    output_dir = Path(output_dir)
    if _occupied(output_dir) and _record_of(output_dir) is None and not overwrite:
        raise FileExistsError(f'{output_dir} exists and was not written by pyterrier_hybrid.train (no training record '
                              'in its config_sentence_transformers.json); pass overwrite=True (--overwrite) to '
                              'replace it, or choose another output directory')
    run = build_trainer(model, data, output_dir, recipe, save_steps=save_steps, **options)
    existing = _record_of(output_dir)
    if existing is not None:
        changes = _run_differences(existing, run.record)
        if not changes:
            log.info('%s is already trained with this recipe, base model and data', output_dir)
            return output_dir
        if not overwrite:
            raise FileExistsError(f'{output_dir} holds a model trained differently ({"; ".join(changes)}); pass '
                                  'overwrite=True (--overwrite) to replace it, or choose another output directory')
    start = _resume_point(run, resume)
    if run.trainer.is_world_process_zero():
        identity = {key: run.record[key] for key in RUN_IDENTITY}
        write_atomically(run.checkpoints / RUN_FILE, lambda tmp: tmp.write_text(json.dumps(identity, indent=2)))
    began = time.perf_counter()
    try:
        run.trainer.train(resume_from_checkpoint=None if start is None else str(start))
    except Exception as error:
        raise _disk_full(error, run.checkpoints) or error
    record = {**run.record, 'train_seconds': round(time.perf_counter() - began, 1),
              'resumed_from_step': _step(start) if start is not None else 0}
    if run.trainer.is_world_process_zero():
        try:
            _save(run.trainer.model, output_dir, record)
        except Exception as error:
            raise _disk_full(error, output_dir) or error
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    return output_dir


#: What makes two runs the same run: resuming or reusing across any of these would mix two models.
RUN_IDENTITY = ('recipe', 'recipe_digest', 'base_model', 'data', 'data_digest')
#: The run identity file in the checkpoints directory.
RUN_FILE = 'recipe.json'


def _rows_digest(rows: TrainingRows) -> str:
    """A content hash of the training rows: the data as trained on (after language selection, code-switching)."""
    digest = hashlib.sha256()
    for column in (rows.anchor, rows.positive, rows.negative or [], rows.query_lang.tolist(),
                   rows.passage_lang.tolist(), rows.source.tolist()):
        digest.update(json.dumps(column, ensure_ascii=False).encode())
    return digest.hexdigest()


def _run_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """How run ``old`` differs from run ``new``: recipe fields, base model and data, as ``name: old -> new``."""
    old_recipe, new_recipe = _with_defaults(old.get('recipe') or {}), new['recipe']
    changes = [f'{key}: {old_recipe.get(key)!r} -> {new_recipe.get(key)!r}'
               for key in dict.fromkeys([*old_recipe, *new_recipe]) if old_recipe.get(key) != new_recipe.get(key)]
    changes += [f'{key}: {old.get(key)!r} -> {new[key]!r}' for key in ('base_model', 'data')
                if old.get(key) != new[key]]
    if old.get('data_digest') != new['data_digest']:
        changes.append('data content (digest of the training rows)')
    return changes


def _with_defaults(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded recipe with the fields added since it was recorded at their defaults (which is how it trained),
    so a run from before a new option is not mistaken for another run; unreadable ones as they are."""
    try:
        return Recipe.from_mapping(recipe).to_dict()
    except (TypeError, ValueError):
        return dict(recipe)


def _occupied(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def _record_of(path: Path) -> dict | None:
    """The training record of ``path``, or None when it has none (or an unreadable one)."""
    try:
        return read_training_record(path)
    except (OSError, ValueError):
        return None


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit('-', 1)[1])


def _resume_point(run: TrainingRun, resume: bool) -> Path | None:
    """The newest complete checkpoint of this run; incomplete ones are reported and removed."""
    checkpoints, primary = run.checkpoints, run.trainer.is_world_process_zero()
    if not resume:
        if primary:
            shutil.rmtree(checkpoints, ignore_errors=True)
        return None
    saved = sorted((p for p in checkpoints.glob('checkpoint-*') if p.name.rsplit('-', 1)[1].isdigit()),
                   key=_step, reverse=True)
    if not saved:
        return None
    try:
        recorded = json.loads((checkpoints / RUN_FILE).read_text())
        changes = _run_differences(recorded, run.record)
    except (OSError, ValueError):
        changes = [f'{RUN_FILE} is missing or unreadable']
    if changes:
        raise FileExistsError(f'{checkpoints} holds checkpoints of another run ({"; ".join(changes)}); resuming '
                              'would train 0 steps of this recipe. Delete that directory or pass resume=False to '
                              'start over')
    args = run.trainer.args
    for checkpoint in saved:
        problem = checkpoint_problem(checkpoint, args.world_size, state=not args.save_only_model)
        if problem is None:
            return checkpoint
        log.warning('skipping incomplete checkpoint %s (%s): its save was cut short; removing it', checkpoint,
                    problem)
        if primary:
            shutil.rmtree(checkpoint, ignore_errors=True)
    log.warning('no complete checkpoint in %s: training from the start', checkpoints)
    return None


def checkpoint_problem(path: str | os.PathLike, world_size: int = 1, state: bool = True) -> str | None:
    """Why a trainer checkpoint is incomplete, or None when it is complete.

    Complete means every file the trainer writes is there and whole: ``trainer_state.json`` (written last) parses
    and names this step; the model weights' safetensors header and length agree; and, with ``state``, the
    optimizer, scheduler and per-process RNG states are whole zip archives (as ``torch.save`` writes them)."""
    path = Path(path)
    try:
        trainer_state = json.loads((path / 'trainer_state.json').read_text())
    except FileNotFoundError:
        return 'trainer_state.json missing'
    except (OSError, ValueError) as error:
        return f'trainer_state.json unreadable: {error}'
    if trainer_state.get('global_step') != _step(path):
        return f'trainer_state.json is at step {trainer_state.get("global_step")}, not {_step(path)}'
    weights = path / 'model.safetensors'
    if not weights.is_file():
        return 'model.safetensors missing'
    if not _whole_safetensors(weights):
        return 'model.safetensors truncated'
    if state:
        rng = ['rng_state.pth'] if world_size == 1 else [f'rng_state_{i}.pth' for i in range(world_size)]
        for name in ('optimizer.pt', 'scheduler.pt', *rng):
            if not (path / name).is_file():
                return f'{name} missing'
            if not zipfile.is_zipfile(path / name):
                return f'{name} truncated'
    return None


def _whole_safetensors(path: Path) -> bool:
    """Whether the file is as long as its header says (safetensors: 8-byte header length, JSON header, data)."""
    try:
        with open(path, 'rb') as f:
            (length,) = struct.unpack('<Q', f.read(8))
            header = json.loads(f.read(length))
        end = max((t['data_offsets'][1] for k, t in header.items() if k != '__metadata__'), default=0)
        return path.stat().st_size == 8 + length + end
    except (OSError, ValueError, struct.error, KeyError, TypeError):
        return False


def _disk_full(error: BaseException, where: Path) -> OSError | None:
    """A clear error for a write that failed because the disk is full (torch reports it as a RuntimeError)."""
    chain, seen = error, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno == errno.ENOSPC:
            break
        chain = chain.__cause__ or chain.__context__
    else:
        try:
            if shutil.disk_usage(where if where.exists() else where.parent).free > 1 << 20:
                return None
        except OSError:
            return None
    full = OSError(errno.ENOSPC, f'no space left on the device of {where} while training; free space and rerun '
                                 '(training resumes from the last complete checkpoint)')
    full.__cause__ = error
    return full


def _save(model, output_dir: Path, record: dict) -> None:
    """Save model, training record and model card to a temporary sibling and rename it into place, so
    ``output_dir`` is either its old self or complete."""
    def write(tmp: Path) -> None:
        model.save(str(tmp))
        config_path = tmp / 'config_sentence_transformers.json'
        config = json.loads(config_path.read_text())
        config['pyterrier_hybrid'] = record
        config_path.write_text(json.dumps(config, indent=2))
        card = tmp / 'README.md'
        card.write_text(_with_section(card.read_text() if card.is_file() else '', 'training',
                                      _training_card(record), before='### Framework Versions'))
        if output_dir.is_dir():  # replacing it was allowed before training started
            shutil.rmtree(output_dir)
        elif output_dir.exists():
            output_dir.unlink()

    write_atomically(output_dir, write)


def _training_card(record: Mapping[str, Any]) -> str:
    """The model card's account of a run: recipe, base model, data and budget."""
    recipe = Recipe.from_mapping(record['recipe'])
    pairs = recipe.steps * recipe.batch_size * record['world_size']
    resumed = f', resumed from step {record["resumed_from_step"]}' if record.get('resumed_from_step') else ''
    strategy = f'{recipe.strategy} (alpha = {recipe.effective_alpha})'
    return '\n'.join([
        '### Training Recipe (pyterrier-hybrid)', '',
        f'- **Strategy:** {strategy}, InfoNCE at temperature {recipe.temperature}, learning rate '
        f'{recipe.learning_rate}, seed {recipe.seed}',
        f'- **Base model:** `{record["base_model"]}`',
        f'- **Data:** {", ".join(record["data"])}; languages {", ".join(record["trained_languages"])}; '
        f'{record["train_rows"]:,} rows{" with hard negatives" if record["hard_negatives"] else ""} '
        f'(digest `{record["data_digest"][:12]}`)',
        f'- **Budget:** {recipe.steps:,} steps × {recipe.batch_size} pairs × {record["world_size"]} '
        f'device{"s" if record["world_size"] > 1 else ""} = {pairs:,} pairs; max length {record["max_length"]} '
        f'tokens; wall time {record["train_seconds"]:.1f} s{resumed}',
        f'- **Recipe** (digest `{record["recipe_digest"][:12]}`; `pyterrier_hybrid.read_recipe(path)` reads it back):',
        '', '```json', json.dumps(record['recipe'], indent=2), '```'])


def add_model_card_results(path: str | os.PathLike, markdown_table: str, title: str = 'Evaluation') -> Path:
    """Add an evaluation table (e.g. the Mo / Cr / Mul results) to a checkpoint's model card, written atomically;
    calling it again replaces the table. Returns the card's path."""
    path = Path(path)
    if not (path / 'config_sentence_transformers.json').is_file():
        raise FileNotFoundError(f'{path} is not a sentence-transformers checkpoint (no config_sentence_transformers'
                                '.json)')
    if not markdown_table.strip():
        raise ValueError('markdown_table is empty')
    card = path / 'README.md'
    text = card.read_text(encoding='utf8') if card.is_file() else ''
    section = f'## {title}\n\n{markdown_table.strip()}'
    updated = _with_section(text, 'results', section, before='## Training Details')
    write_atomically(card, lambda tmp: tmp.write_text(updated, encoding='utf8'))
    return card


def _with_section(card: str, key: str, body: str, before: str) -> str:
    """``card`` with a delimited section ``key``: replaced where it exists, else put before the ``before`` heading
    (or at the end)."""
    begin, end = f'<!-- pyterrier-hybrid:{key} -->', f'<!-- /pyterrier-hybrid:{key} -->'
    section = f'{begin}\n{body.strip()}\n{end}\n'
    if begin in card and end in card:
        head, rest = card.split(begin, 1)
        return head + section + rest.split(end, 1)[1].lstrip('\n')
    at = card.find(f'\n{before}\n')
    if at < 0:
        return (card.rstrip('\n') + '\n\n' if card.strip() else '') + section
    return card[:at + 1] + section + '\n' + card[at + 1:]


def read_training_record(path: str | os.PathLike) -> dict | None:
    """What a checkpoint trained by this package records: ``recipe`` (a :class:`Recipe`'s values), the base model,
    the data sources, the languages trained on, rows and world size (None for other checkpoints)."""
    config = Path(path) / 'config_sentence_transformers.json'
    return json.loads(config.read_text()).get('pyterrier_hybrid') if config.is_file() else None


def read_recipe(path: str | os.PathLike) -> Recipe | None:
    """The :class:`Recipe` a checkpoint was trained with (None for checkpoints this package did not train)."""
    record = read_training_record(path)
    return None if record is None else Recipe.from_mapping(record['recipe'])


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()
