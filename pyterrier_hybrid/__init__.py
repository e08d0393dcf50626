"""pyterrier-hybrid: zero-shot monolingual, cross-lingual and multilingual dense retrieval in PyTerrier.

Importing the package registers the LAReQA ids in ir_datasets (``lareqa/xquad-r/de``, ...). Model classes are
imported lazily, so ``import pyterrier_hybrid`` stays free of torch.
"""
from __future__ import annotations

import importlib

from . import lareqa
from .code_switching import CodeSwitcher, Lexicon, SwitchStats, code_switched_items, load_lexicon, muse_lexicon
from .evaluation import (
    Setting,
    evaluate_settings,
    lareqa_settings,
    macro_average,
    macro_average_perquery,
    miracl_languages,
    miracl_settings,
    paired_tests,
)
from .lareqa import ChecksumError, lareqa_query_counts, set_lareqa_dir
from .measures import DEFAULT_MEASURES, RankDistance
from .training_data import ParallelItem, TrainingRows, build_rows, irds_items, lareqa_items, read_items, write_items
from .translation import (
    LexiconTranslator,
    Seq2SeqTranslator,
    TranslationCache,
    UnsupportedLanguageError,
    english_items,
    merge_translations,
    translate_train,
)

__version__ = '0.1.0'

# Heavy (torch) names, imported on first use: name -> submodule.
_LAZY = {
    'HybridEncoder': '.encoders', 'EncoderConfig': '.encoders', 'read_encoder_config': '.encoders',
    'DenseIndex': '.index', 'FaissRetriever': '.index', 'shard_corpus': '.index',
    'CorruptIndexError': '.index', 'IncompatibleEncoderError': '.index',
    'PooledDenseRetrieval': '.pooled', 'QueryVectors': '.pooled', 'evaluate_pooled': '.pooled',
    'HybridBatchSampler': '.sampler',
    'train': '.training', 'build_trainer': '.training', 'HybridTrainingArguments': '.training',
    'read_recipe': '.training',
    'load_experiment': '.experiment', 'run_experiment': '.experiment', 'ExperimentError': '.experiment',
}

def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    '__version__', 'lareqa', 'ChecksumError', 'set_lareqa_dir', 'lareqa_query_counts',
    'RankDistance', 'DEFAULT_MEASURES',
    'ParallelItem', 'TrainingRows', 'build_rows', 'read_items', 'write_items', 'lareqa_items', 'irds_items',
    'Setting', 'lareqa_settings', 'miracl_settings', 'miracl_languages', 'evaluate_settings', 'macro_average',
    'macro_average_perquery', 'paired_tests',
    'Lexicon', 'load_lexicon', 'muse_lexicon', 'CodeSwitcher', 'SwitchStats', 'code_switched_items',
    'Seq2SeqTranslator', 'LexiconTranslator', 'TranslationCache', 'UnsupportedLanguageError', 'english_items',
    'translate_train', 'merge_translations',
    *_LAZY,
]
