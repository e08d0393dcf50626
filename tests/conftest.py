"""Shared fixtures: the real LAReQA files in ../shared, never a network fetch."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
LAREQA_DIR = Path(os.environ.get('PYTERRIER_HYBRID_LAREQA_DIR', SHARED / 'data' / 'lareqa'))
os.environ.setdefault('PYTERRIER_HYBRID_LAREQA_DIR', str(LAREQA_DIR))


@pytest.fixture(scope='session')
def lareqa_dir() -> Path:
    if not (LAREQA_DIR / 'xquad-r' / 'en.json').is_file():
        pytest.fail(f'the real LAReQA files are missing from {LAREQA_DIR} (see ../shared/README.md)')
    return LAREQA_DIR


TINY_TEXTS = [
    'How many points did the Panthers defense surrender?', 'The Panthers defense gave up just 308 points.',
    'Wie viele Punkte gab die Verteidigung der Panthers ab?', 'Die Verteidigung gab nur 308 Punkte ab.',
    'Who led the team in interceptions?', 'Kurt Coleman led the team with seven interceptions.',
    '¿Cuántos puntos permitió la defensa?', 'La defensa permitió solo 308 puntos.',
    'query: passage: a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9',
]


def build_tiny_model(path: Path, *, pooling: str = 'mean', prompts: bool = True, texts: list[str] = TINY_TEXTS,
                     vocab_size: int = 300, sentence_transformers_files: bool = True) -> Path:
    """A randomly initialised 2-layer BERT with a WordPiece vocabulary trained here (on ``texts``), saved with
    sentence-transformers' files, so it loads with HybridEncoder, SentenceTransformer and AutoModel; without them
    (``sentence_transformers_files=False``) it is a plain Hugging Face checkpoint."""
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token='[UNK]'))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    special = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    tokenizer.train_from_iterator(texts * 4, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B [SEP]',
        special_tokens=[('[CLS]', tokenizer.token_to_id('[CLS]')), ('[SEP]', tokenizer.token_to_id('[SEP]'))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token='[UNK]', pad_token='[PAD]',
                                   cls_token='[CLS]', sep_token='[SEP]', mask_token='[MASK]', model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    if not sentence_transformers_files:
        return path
    (path / '1_Pooling').mkdir(exist_ok=True)
    (path / '1_Pooling' / 'config.json').write_text(json.dumps({
        'word_embedding_dimension': 32, 'pooling_mode_cls_token': pooling == 'cls',
        'pooling_mode_mean_tokens': pooling == 'mean'}))
    (path / 'modules.json').write_text(json.dumps([
        {'idx': 0, 'name': '0', 'path': '', 'type': 'sentence_transformers.models.Transformer'},
        {'idx': 1, 'name': '1', 'path': '1_Pooling', 'type': 'sentence_transformers.models.Pooling'},
        {'idx': 2, 'name': '2', 'path': '2_Normalize', 'type': 'sentence_transformers.models.Normalize'}]))
    (path / 'sentence_bert_config.json').write_text(json.dumps({'max_seq_length': 48, 'do_lower_case': False}))
    (path / 'config_sentence_transformers.json').write_text(json.dumps({
        'prompts': {'query': 'query: ', 'passage': 'passage: '} if prompts else {},
        'default_prompt_name': None, 'similarity_fn_name': 'cosine'}))
    return path


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp('tiny-mean'))


@pytest.fixture(scope='session')
def tiny_encoder(tiny_model):
    from pyterrier_hybrid import HybridEncoder
    return HybridEncoder.from_pretrained(tiny_model, batch_size=4)


@pytest.fixture(scope='session')
def offline_models() -> dict[str, Path]:
    """The real checkpoints built by ../shared/tools/offline-models (about a minute the first time)."""
    import subprocess
    tool = SHARED / 'tools' / 'offline-models'
    done = subprocess.run([str(tool)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f'{tool} failed: {done.stderr[-2000:]}')
    return {name: Path(path) for name, path in (line.split('=', 1) for line in done.stdout.split())}


def mmarco_shaped(lang: str) -> str:
    """Real XQuAD-R questions and sentences as an ir_datasets docpairs set shaped like mMARCO: query ids shared
    across languages, (query, answer sentence, another sentence of its paragraph) triples; German lists them in
    reverse, so only alignment by query id can pair the versions."""
    import ir_datasets
    from ir_datasets.formats import BaseDocPairs, BaseQueries, GenericDocPair, GenericQuery

    mono = ir_datasets.load(f'lareqa/xquad-r/{lang}/{lang}')
    answers = {}
    for qrel in mono.qrels_iter():
        answers.setdefault(qrel.query_id.split('-', 1)[1], qrel.doc_id)

    class Queries(BaseQueries):
        def queries_iter(self):
            for query in mono.queries_iter():
                yield GenericQuery(query.query_id.split('-', 1)[1], query.text)

    class Pairs(BaseDocPairs):
        def docpairs_iter(self):
            for qid, answer in (reversed if lang == 'de' else iter)(list(answers.items())):
                paragraph, sentence = answer.rsplit('-', 1)
                yield GenericDocPair(qid, answer, f'{paragraph}-{int(sentence) ^ 1}')

    dataset_id = f'test-mmarco-shaped/{lang}'
    if dataset_id not in ir_datasets.registry:
        ir_datasets.registry.register(dataset_id, ir_datasets.Dataset(Queries(), Pairs(), mono))
    return dataset_id


def mounted_tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` (mount syntax: 64k, 2m) mounted at ``path`` for a full-disk test, unmounted afterwards;
    the test is skipped where mounting is not allowed (not root, or no mount in this sandbox)."""
    import subprocess
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    path.mkdir()
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here: {done.stderr.strip()}')
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', str(path)], check=True)
