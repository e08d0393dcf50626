"""pyterrier-hybrid: zero-shot monolingual, cross-lingual and multilingual dense retrieval in PyTerrier.

The package follows the pipeline: :mod:`.data` (LAReQA / MIRACL in ir_datasets, training items, code-switching,
translate-train) → :mod:`.training` (recipe, sampler, trainer) → :mod:`.retrieval` (encoder, index, pooled
retrieval) → :mod:`.evaluation` (settings, measures, fast path, statistics) → :mod:`.experiment` (schema, runner,
report). Importing it registers the LAReQA ids in ir_datasets; every public name is importable from here, the
heavy (torch) ones lazily, so ``import pyterrier_hybrid`` stays free of torch.
"""
from __future__ import annotations

import importlib

from .data import lareqa
from .data.code_switching import CodeSwitcher, Lexicon, SwitchStats, code_switched_items, load_lexicon, muse_lexicon
from .data.items import ParallelItem, irds_items, lareqa_items, read_items, write_items
from .data.lareqa import ChecksumError, lareqa_query_counts, set_lareqa_dir
from .data.translation import (
    LexiconTranslator,
    Seq2SeqTranslator,
    TranslationCache,
    UnsupportedLanguageError,
    english_items,
    merge_translations,
    translate_train,
)
from .evaluation.measures import DEFAULT_MEASURES, RankDistance
from .evaluation.settings import Setting, evaluate_settings, lareqa_settings, miracl_languages, miracl_settings
from .evaluation.statistics import macro_average, macro_average_perquery, pair_tests, paired_tests, seed_summary
from .training.recipe import CodeSwitching, Recipe, RecipeError
from .training.rows import TrainingRows, build_rows

__version__ = '0.2.0'

# Heavy (torch) names, imported on first use: name -> submodule.
_LAZY = {
    'HybridEncoder': '.retrieval.encoder', 'EncoderConfig': '.retrieval.encoder',
    'DenseIndex': '.retrieval.index', 'FaissRetriever': '.retrieval.index', 'shard_corpus': '.retrieval.index',
    'CorruptIndexError': '.retrieval.index', 'IncompatibleEncoderError': '.retrieval.index',
    'PooledDenseRetrieval': '.retrieval.pooled', 'QueryVectors': '.retrieval.pooled',
    'LanguageMeans': '.retrieval.bias', 'LanguageBiasRemoval': '.retrieval.bias',
    'UnknownLanguageError': '.retrieval.bias', 'MissingLanguageError': '.retrieval.bias',
    'BiasGate': '.retrieval.gate', 'QuantizationRefusedError': '.retrieval.gate',
    'evaluate_pooled': '.evaluation.fast', 'PooledVectors': '.evaluation.fast',
    'HybridBatchSampler': '.training.sampler',
    'train': '.training.trainer', 'build_trainer': '.training.trainer',
    'read_recipe': '.training.trainer', 'read_training_record': '.training.trainer',
    'add_model_card_results': '.training.trainer',
    'load_experiment': '.experiment.config', 'ExperimentError': '.experiment.config',
    'run_experiment': '.experiment.runner',
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    '__version__', 'lareqa', 'ChecksumError', 'set_lareqa_dir', 'lareqa_query_counts',
    'RankDistance', 'DEFAULT_MEASURES',
    'Recipe', 'CodeSwitching', 'RecipeError',
    'ParallelItem', 'TrainingRows', 'build_rows', 'read_items', 'write_items', 'lareqa_items', 'irds_items',
    'Setting', 'lareqa_settings', 'miracl_settings', 'miracl_languages', 'evaluate_settings', 'macro_average',
    'macro_average_perquery', 'paired_tests', 'pair_tests', 'seed_summary',
    'Lexicon', 'load_lexicon', 'muse_lexicon', 'CodeSwitcher', 'SwitchStats', 'code_switched_items',
    'Seq2SeqTranslator', 'LexiconTranslator', 'TranslationCache', 'UnsupportedLanguageError', 'english_items',
    'translate_train', 'merge_translations',
    *_LAZY,
]
