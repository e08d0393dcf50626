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
``config_sentence_transformers.json``.

What a run trains is a :class:`~pyterrier_hybrid.training.recipe.Recipe`; its inputs are the base model and the
training data. Options that only say how the run executes (``save_steps``, the trainer's own arguments) are not
part of the recipe.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sentence_transformers import SentenceTransformerTrainingArguments
from transformers import TrainerCallback

from pyterrier_hybrid.data import lareqa
from pyterrier_hybrid.data.items import ParallelItem, lareqa_items, read_items

from .recipe import CodeSwitching, Recipe
from .rows import build_rows

TrainingData = str | os.PathLike | Iterable[ParallelItem] | Mapping[str, Iterable[ParallelItem]]

log = logging.getLogger('pyterrier_hybrid')


def load_training_data(data: TrainingData, code_switching: CodeSwitching | None = None
                       ) -> dict[str, list[ParallelItem]]:
    """Named sources of items from: a LAReQA collection name (``'lareqa/mlqa-r'``), a JSONL path, items, or a
    mapping of source name to items (batches are drawn per source, in proportion to size).

    With ``code_switching``, each source is replaced by its English items plus their code-switched copies
    (language ``cs``): the ACS training set of arXiv 2305.05295, which the realised switch ratio per language and
    the lexicons' coverage are logged for."""
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
    return english + switched


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


def prepare(model, data: TrainingData, recipe: Recipe, batch_size: int):
    """Rows, dataset, loss and batch sampler for one run; every input error is raised here, before training."""
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
    columns = {'anchor': rows.anchor, 'positive': rows.positive}
    if rows.negative is not None:
        columns['negative'] = rows.negative
    dataset = Dataset.from_dict(columns)
    sampler = functools.partial(HybridBatchSampler, rows=rows, alpha=recipe.effective_alpha)
    sampler(dataset, batch_size=batch_size, drop_last=True, seed=recipe.seed)  # validates
    if recipe.mini_batch_size:
        loss = CachedMultipleNegativesRankingLoss(model, scale=1 / recipe.temperature,
                                                  mini_batch_size=recipe.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=1 / recipe.temperature)
    return rows, dataset, loss, sampler


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
                    dataloader_drop_last=True, warmup_ratio=0.1)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints), max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, seed=recipe.seed, data_seed=recipe.seed, save_steps=save_steps,
        **{**defaults, **training_args})
    st_model = SentenceTransformer(str(model), device='cuda' if _cuda() else 'cpu')
    if recipe.max_length:
        st_model.max_seq_length = recipe.max_length
    if recipe.freeze_embeddings:
        st_model[0].auto_model.get_input_embeddings().requires_grad_(False)
    prompts = st_model.prompts or {}
    query_prompt, passage_prompt = prompts.get('query', ''), prompts.get('passage', prompts.get('document', ''))
    args.prompts = {'anchor': query_prompt, 'positive': passage_prompt, 'negative': passage_prompt}
    rows, dataset, loss, sampler = prepare(st_model, data, recipe, recipe.batch_size)
    args.batch_sampler = sampler
    trainer = SentenceTransformerTrainer(model=st_model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[ThroughputCallback(recipe.batch_size)])
    record = {
        'recipe': recipe.to_dict(), 'base_model': str(model), 'data': sorted(set(rows.source.tolist())),
        'trained_languages': sorted(set(rows.query_lang.tolist())), 'max_length': st_model.max_seq_length,
        'world_size': args.world_size, 'hard_negatives': rows.negative is not None, 'train_rows': len(rows)}
    return TrainingRun(trainer, record, checkpoints)


def train(model: str | os.PathLike, data: TrainingData, output_dir: str | os.PathLike, recipe: Recipe | None = None,
          *, resume: bool = True, save_steps: int = 500, **options) -> Path:
    """Fine-tune ``model`` on ``data`` with ``recipe`` and save it to ``output_dir``.

    Args:
        model: a sentence-transformers or Hugging Face checkpoint (Hub id or path).
        data: ``'lareqa/mlqa-r'``, a JSONL path of :class:`~pyterrier_hybrid.ParallelItem`, items, or
            ``{source name: items}``.
        output_dir: where the trained checkpoint goes; trainer checkpoints live in ``{output_dir}.checkpoints``
            until training finishes, and an interrupted run resumes from the last of them (``resume=True``).
        recipe: what to train (:class:`~pyterrier_hybrid.Recipe`; its defaults when omitted).
        save_steps: checkpoint every this many steps.
        options: :class:`~pyterrier_hybrid.Recipe` fields overriding ``recipe`` (``strategy='xy', steps=40``),
            and any other :class:`~sentence_transformers.SentenceTransformerTrainingArguments` field.

    Returns:
        The output directory, loadable by ``HybridEncoder.from_pretrained``, ``SentenceTransformer`` and
        ``transformers.AutoModel``; :func:`read_recipe` gives back its recipe.
    """
    run = build_trainer(model, data, output_dir, recipe, save_steps=save_steps, **options)
    has_checkpoint = resume and any(run.checkpoints.glob('checkpoint-*'))
    run.trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    if run.trainer.is_world_process_zero():
        _save(run.trainer.model, Path(output_dir), run.record)
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    return Path(output_dir)


def _save(model, output_dir: Path, record: dict) -> None:
    """Save to a temporary sibling and rename, so ``output_dir`` is either absent or complete."""
    tmp = output_dir.with_name(f'.{output_dir.name}.saving-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    config_path = tmp / 'config_sentence_transformers.json'
    config = json.loads(config_path.read_text())
    config['pyterrier_hybrid'] = record
    config_path.write_text(json.dumps(config, indent=2))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)


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
