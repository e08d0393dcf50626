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
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sentence_transformers import SentenceTransformerTrainingArguments
from transformers import TrainerCallback

from pyterrier_hybrid.data import lareqa
from pyterrier_hybrid.data.items import ParallelItem, lareqa_items, read_items

from .recipe import STRATEGIES
from .rows import build_rows


@dataclass
class HybridTrainingArguments(SentenceTransformerTrainingArguments):
    """sentence-transformers training arguments plus the hybrid-batch recipe."""
    strategy: str = field(default='hybrid', metadata={'help': f'one of {", ".join(STRATEGIES)}'})
    alpha: float | None = field(default=None, metadata={
        'help': 'probability of a monolingual batch; set by the strategy unless hybrid (default 0.5)'})
    temperature: float = field(default=0.05, metadata={'help': 'InfoNCE temperature (scale = 1 / temperature)'})
    mini_batch_size: int | None = field(default=None, metadata={
        'help': 'GradCache mini-batch size: large batches in small memory (None: plain InfoNCE)'})
    negative_language: str = field(default='passage', metadata={
        'help': "hard negatives of a cross-lingual pair: the passage's ('passage') or the query's ('query')"})
    freeze_embeddings: bool = field(default=False, metadata={
        'help': 'do not train the word embeddings (a large, slow part of multilingual vocabularies)'})

    def __post_init__(self):
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f'unknown strategy {self.strategy!r}; valid: {", ".join(STRATEGIES)}')
        fixed = STRATEGIES[self.strategy]
        if fixed is not None and self.alpha not in (None, fixed):
            raise ValueError(f'strategy {self.strategy!r} fixes alpha = {fixed}; use strategy="hybrid" for alpha='
                             f'{self.alpha}')
        self.alpha = fixed if fixed is not None else (0.5 if self.alpha is None else self.alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f'alpha must lie in [0, 1] (1 = X-X-mono, 0 = X-Y), not {self.alpha}')
        if self.temperature <= 0:
            raise ValueError(f'temperature must be positive, not {self.temperature}')


TrainingData = str | os.PathLike | Iterable[ParallelItem] | Mapping[str, Iterable[ParallelItem]]


def load_training_data(data: TrainingData) -> dict[str, list[ParallelItem]]:
    """Named sources of items from: a LAReQA collection name (``'lareqa/mlqa-r'``), a JSONL path, items, or a
    mapping of source name to items (batches are drawn per source, in proportion to size)."""
    if isinstance(data, Mapping):
        return {name: list(items) for name, items in data.items()}
    if isinstance(data, (str, os.PathLike)):
        name = str(data)
        collection = name.removeprefix('lareqa/')
        if collection in lareqa.COLLECTIONS:
            return {name: lareqa_items(collection)}
        if not Path(name).is_file():
            raise FileNotFoundError(f'training data {name!r} is neither a JSONL file nor one of '
                                    f'{", ".join("lareqa/" + c for c in lareqa.COLLECTIONS)}')
        return {Path(name).stem: read_items(name)}
    return {'items': list(data)}


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


def prepare(model, data: TrainingData, args: HybridTrainingArguments, languages: Iterable[str] | None = None):
    """Rows, dataset, loss and batch sampler for one run; every input error is raised here, before training."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    from .sampler import HybridBatchSampler
    sources = load_training_data(data)
    languages = ['en'] if args.strategy == 'en-en' else (list(languages) if languages else None)
    if languages is not None:
        sources = {name: [i for i in items if i.lang in languages] for name, items in sources.items()}
    for name, items in sources.items():
        if not items:
            raise ValueError(f'training source {name!r} has no items' +
                             (f' in languages {", ".join(languages)}' if languages else ''))
    rows = build_rows(sources, seed=args.seed, negative_language=args.negative_language)
    columns = {'anchor': rows.anchor, 'positive': rows.positive}
    if rows.negative is not None:
        columns['negative'] = rows.negative
    dataset = Dataset.from_dict(columns)
    sampler = functools.partial(HybridBatchSampler, rows=rows, alpha=args.alpha)
    sampler(dataset, batch_size=args.per_device_train_batch_size, drop_last=True, seed=args.seed)  # validates
    if args.mini_batch_size:
        loss = CachedMultipleNegativesRankingLoss(model, scale=1 / args.temperature,
                                                  mini_batch_size=args.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=1 / args.temperature)
    return rows, dataset, loss, sampler


class TrainingRun(NamedTuple):
    """A configured run: the sentence-transformers trainer, the recipe to record, where checkpoints go."""
    trainer: object  # SentenceTransformerTrainer
    recipe: dict
    checkpoints: Path


def build_trainer(model: str | os.PathLike, data: TrainingData, output_dir: str | os.PathLike, *,
                  strategy: str = 'hybrid', alpha: float | None = None, steps: int = 1000, batch_size: int = 32,
                  learning_rate: float = 2e-5, temperature: float = 0.05, languages: Iterable[str] | None = None,
                  max_length: int | None = None, mini_batch_size: int | None = None, negative_language: str = 'passage',
                  freeze_embeddings: bool = False, seed: int = 42, save_steps: int = 500,
                  **training_args) -> TrainingRun:
    """Configure (and validate) a run without starting it; :func:`train` documents the arguments."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    output_dir = Path(output_dir)
    checkpoints = output_dir.with_name(output_dir.name + '.checkpoints')
    defaults = dict(save_total_limit=2, logging_steps=max(1, min(50, steps // 20)), report_to='none',
                    dataloader_drop_last=True, warmup_ratio=0.1)
    args = HybridTrainingArguments(
        output_dir=str(checkpoints), strategy=strategy, alpha=alpha, temperature=temperature,
        mini_batch_size=mini_batch_size, negative_language=negative_language, freeze_embeddings=freeze_embeddings,
        max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate, seed=seed, data_seed=seed,
        save_steps=save_steps, **{**defaults, **training_args})
    st_model = SentenceTransformer(str(model), device='cuda' if _cuda() else 'cpu')
    if max_length:
        st_model.max_seq_length = max_length
    if freeze_embeddings:
        st_model[0].auto_model.get_input_embeddings().requires_grad_(False)
    prompts = st_model.prompts or {}
    query_prompt, passage_prompt = prompts.get('query', ''), prompts.get('passage', prompts.get('document', ''))
    args.prompts = {'anchor': query_prompt, 'positive': passage_prompt, 'negative': passage_prompt}
    rows, dataset, loss, sampler = prepare(st_model, data, args, languages)
    args.batch_sampler = sampler
    trainer = SentenceTransformerTrainer(model=st_model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[ThroughputCallback(batch_size)])
    recipe = {
        'strategy': args.strategy, 'alpha': args.alpha, 'temperature': args.temperature, 'steps': steps,
        'batch_size': batch_size, 'world_size': args.world_size, 'learning_rate': learning_rate, 'seed': seed,
        'base_model': str(model), 'data': sorted(set(rows.source.tolist())),
        'languages': sorted(set(rows.query_lang.tolist())), 'max_length': st_model.max_seq_length,
        'freeze_embeddings': freeze_embeddings, 'mini_batch_size': mini_batch_size,
        'hard_negatives': rows.negative is not None, 'negative_language': args.negative_language,
        'train_rows': len(rows)}
    return TrainingRun(trainer, recipe, checkpoints)


def train(model: str | os.PathLike, data: TrainingData, output_dir: str | os.PathLike, *, resume: bool = True,
          **kwargs) -> Path:
    """Fine-tune ``model`` on ``data`` with a batch strategy and save it to ``output_dir``.

    Args:
        model: a sentence-transformers or Hugging Face checkpoint (Hub id or path).
        data: ``'lareqa/mlqa-r'``, a JSONL path of :class:`~pyterrier_hybrid.ParallelItem`, items, or
            ``{source name: items}``.
        output_dir: where the trained checkpoint goes; trainer checkpoints live in ``{output_dir}.checkpoints``
            until training finishes, and an interrupted run resumes from the last of them (``resume=True``).
        strategy: ``hybrid``, ``xx-mono``, ``xy`` or ``en-en``; alpha: hybrid's monolingual batch probability.
        steps, batch_size, learning_rate, temperature, seed: the usual; ``batch_size`` is per device.
        languages: train on these languages only.
        max_length: truncate texts to this many tokens.
        mini_batch_size: GradCache mini-batches (large batches in small memory).
        negative_language: a cross-lingual pair's hard negative comes from its ``'passage'`` version (default) or
            its ``'query'`` version (a same-language distractor for the query: trains against language bias).
        freeze_embeddings: keep the word embeddings fixed.
        save_steps: checkpoint every this many steps.
        kwargs: also any other :class:`~sentence_transformers.SentenceTransformerTrainingArguments` field.

    Returns:
        The output directory, loadable by ``HybridEncoder.from_pretrained``, ``SentenceTransformer`` and
        ``transformers.AutoModel``.
    """
    run = build_trainer(model, data, output_dir, **kwargs)
    has_checkpoint = resume and any(run.checkpoints.glob('checkpoint-*'))
    run.trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    if run.trainer.is_world_process_zero():
        _save(run.trainer.model, Path(output_dir), run.recipe)
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    return Path(output_dir)


def _save(model, output_dir: Path, recipe: dict) -> None:
    """Save to a temporary sibling and rename, so ``output_dir`` is either absent or complete."""
    tmp = output_dir.with_name(f'.{output_dir.name}.saving-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    config_path = tmp / 'config_sentence_transformers.json'
    config = json.loads(config_path.read_text())
    config['pyterrier_hybrid'] = recipe
    config_path.write_text(json.dumps(config, indent=2))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)


def read_recipe(path: str | os.PathLike) -> dict | None:
    """The training recipe recorded in a checkpoint trained by this package (None for other checkpoints)."""
    config = Path(path) / 'config_sentence_transformers.json'
    return json.loads(config.read_text()).get('pyterrier_hybrid') if config.is_file() else None


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


