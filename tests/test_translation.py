"""Translate-train on a tiny Marian model built here, on real XQuAD-R items and the real lexicons in ../shared."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import mmarco_shaped
from tiny_marian import build_tiny_marian

from pyterrier_hybrid import build_rows, lareqa_items, read_items, write_items
from pyterrier_hybrid.cli import main
from pyterrier_hybrid.data.code_switching import load_lexicon
from pyterrier_hybrid.data.translation import (
    LexiconTranslator,
    Seq2SeqTranslator,
    TranslationCache,
    UnsupportedLanguageError,
    english_items,
    manifest_path,
    merge_translations,
    translate_train,
)

LEXICONS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'lexicons'


@pytest.fixture(scope='module')
def english(lareqa_dir):
    """Nine real English XQuAD-R items, one with an empty negative and one far longer than max_length."""
    items = lareqa_items('xquad-r', ['en'])[:9]
    items[1] = items[1]._replace(negatives=items[1].negatives + ('',))
    items[2] = items[2]._replace(positive=' '.join([items[2].positive] * 20))
    return items


@pytest.fixture(scope='module')
def marian(tmp_path_factory, english):
    texts = [t for item in english for t in (item.query, item.positive, *item.negatives)]
    return build_tiny_marian(tmp_path_factory.mktemp('mt') / 'opus-mt-en-de', texts)


@pytest.fixture
def source(tmp_path, english):
    path = tmp_path / 'en.jsonl'
    write_items(english, path)
    return path


def translator(marian, **kwargs) -> Seq2SeqTranslator:
    return Seq2SeqTranslator(marian, **{'batch_size': 4, 'max_length': 128, **kwargs})


def test_translations_stay_aligned_with_documented_edge_cases(marian, source, english, tmp_path):
    mt = translator(marian)
    out = translate_train(source, tmp_path / 'train.jsonl', mt, ['en', 'de'], progress=False)
    items = read_items(out)
    assert [(i.id, i.lang) for i in items] == [(e.id, lang) for e in english for lang in ('en', 'de')]
    for en, de in zip(items[::2], items[1::2]):
        assert en == english[items.index(en) // 2]
        assert len(de.negatives) == len(en.negatives) and de.query and de.positive
    assert read_items(out)[3].negatives[-1] == ''  # an empty text stays empty
    assert len(items[5].positive.split()) < len(english[2].positive.split())  # truncated to max_length tokens
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest['counts'] == {'en': 9, 'de': 9} and manifest['items'] == 9
    assert manifest['translator'] == str(marian) and manifest['kind'] == 'machine translation'
    assert manifest['truncated'] == 1 and manifest['texts_cached'] == 0 and manifest['texts_translated'] > 9
    rows = build_rows({'translated': items})  # ready for the hybrid trainer: 9 items x 2 x 2 language pairs
    assert len(rows.anchor) == 36 and set(zip(rows.query_lang, rows.passage_lang)) == {
        (q, p) for q in ('en', 'de') for p in ('en', 'de')}


def test_the_cache_makes_a_second_run_do_no_model_calls(marian, source, tmp_path):
    first = translate_train(source, tmp_path / 'a.jsonl', translator(marian), ['de'], cache=tmp_path / 'c.sqlite',
                            progress=False)
    again = translator(marian)
    second = translate_train(source, tmp_path / 'b.jsonl', again, ['de'], cache=tmp_path / 'c.sqlite',
                             progress=False)
    assert again.generate_calls == 0 and first.read_text() == second.read_text()
    manifest = json.loads(manifest_path(second).read_text())
    cached = len(TranslationCache(tmp_path / 'c.sqlite'))
    assert manifest['texts_translated'] == 0 and manifest['texts_cached'] == cached


def test_an_interrupted_run_resumes_without_retranslating(marian, source, tmp_path, monkeypatch):
    whole = translate_train(source, tmp_path / 'whole.jsonl', translator(marian), ['de'], cache=tmp_path / 'w.sqlite',
                            progress=False, chunk_items=3)
    crashing = translator(marian)
    real_call = Seq2SeqTranslator.__call__
    chunks = Counter()

    def crash_on_third_chunk(self, texts, src, tgt):
        chunks['seen'] += 1
        if chunks['seen'] == 3:
            raise KeyboardInterrupt
        return real_call(self, texts, src, tgt)

    monkeypatch.setattr(Seq2SeqTranslator, '__call__', crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        translate_train(source, tmp_path / 'resumed.jsonl', crashing, ['de'], progress=False, chunk_items=3)
    assert not (tmp_path / 'resumed.jsonl').exists()
    monkeypatch.setattr(Seq2SeqTranslator, '__call__', real_call)
    resumed = translate_train(source, tmp_path / 'resumed.jsonl', translator(marian), ['de'], progress=False,
                              chunk_items=3)
    manifest = json.loads(manifest_path(resumed).read_text())
    assert manifest['texts_cached'] > 0 and manifest['texts_translated'] > 0  # two chunks kept, one redone
    assert resumed.read_text() == whole.read_text()


def test_shards_merge_to_the_one_run_output(marian, source, tmp_path):
    whole = translate_train(source, tmp_path / 'whole.jsonl', translator(marian), ['de'], progress=False)
    shards = [translate_train(source, tmp_path / f's{i}.jsonl', translator(marian), ['de'], shard=(i, 2),
                              progress=False) for i in (1, 0)]
    merged = merge_translations(shards, tmp_path / 'merged.jsonl')
    assert merged.read_text() == whole.read_text()
    manifest = json.loads(manifest_path(merged).read_text())
    assert manifest['items'] == 9 and manifest['counts'] == {'en': 9, 'de': 9} and manifest['shard'] is None
    with pytest.raises(ValueError, match=r'do not cover 0..1'):
        merge_translations(shards[:1], tmp_path / 'bad.jsonl')


def test_length_sorted_batches_do_less_work_for_the_same_output(marian, english):
    texts = [t for item in english for t in (item.query, item.positive)]
    arrival, by_length = translator(marian, sort_by_length=False), translator(marian)
    assert arrival(texts, 'en', 'de') == by_length(texts, 'en', 'de') == [translator(marian, batch_size=1)(
        [t], 'en', 'de')[0] for t in texts]
    assert by_length.decoder_steps < arrival.decoder_steps and by_length.input_tokens < arrival.input_tokens


def test_unsupported_language_fails_before_any_work(marian, source, tmp_path):
    with pytest.raises(UnsupportedLanguageError, match=r'translates en->de, not en->fr'):
        translate_train(source, tmp_path / 'x.jsonl', translator(marian), ['de', 'fr'], progress=False)
    assert not (tmp_path / 'x.jsonl').exists()


def test_multi_target_marian_picks_the_language_by_prefix_token(english, tmp_path):
    texts = [t for item in english for t in (item.query, item.positive)]
    model = build_tiny_marian(tmp_path / 'opus-mt-en-mul', texts, target_tokens=['>>de<<', '>>es<<'])
    mt = translator(model)
    assert mt.language_codes('en', 'es') == (None, '>>es<<')
    with pytest.raises(UnsupportedLanguageError, match=r"cannot translate into 'ru'; it knows de, es"):
        mt.language_codes('en', 'ru')
    german, blank = mt([texts[0], ' '], 'en', 'de')
    assert german and blank == '' and mt.input_tokens == len(mt._load('en', 'de')[1](f'>>de<< {texts[0]}')[
        'input_ids'])  # the prefix token went in, the blank text did not


@pytest.mark.parametrize('family', ['nllb', 'm2m100'])
def test_nllb_and_m2m100_language_codes(family, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import M2M100Config, M2M100ForConditionalGeneration, PreTrainedTokenizerFast
    codes = ['eng_Latn', 'deu_Latn', 'zho_Hans'] if family == 'nllb' else ['__en__', '__de__', '__zh__']
    words = ['<pad>', '</s>', '<unk>', '<s>', *codes, 'the', 'house', 'is', 'big']
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token='<unk>'))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token='<pad>', eos_token='</s>', unk_token='<unk>',
                            bos_token='<s>').save_pretrained(tmp_path)
    M2M100ForConditionalGeneration(M2M100Config(
        vocab_size=len(words), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, pad_token_id=0, eos_token_id=1,
        bos_token_id=3, decoder_start_token_id=1)).save_pretrained(tmp_path)
    mt = Seq2SeqTranslator(tmp_path, max_length=8)
    assert mt.language_codes('en', 'de') == tuple(codes[:2])
    assert mt.language_codes('en', 'zh') == (codes[0], codes[2])
    with pytest.raises(UnsupportedLanguageError, match=r"does not support 'th'"):
        mt.language_codes('en', 'th')
    assert len(mt(['the house is big', ''], 'en', 'de')) == 2 and mt.generate_calls == 1


def test_lexicon_translator_on_the_real_lexicons(source, tmp_path):
    en_de = load_lexicon(LEXICONS / 'en-de.txt')
    words = LexiconTranslator([en_de, load_lexicon(LEXICONS / 'en-es.txt')])
    de, = words(['The house, 42 points!'], 'en', 'de')
    the, house, comma, number, points, bang = re.findall(r'[\w-]+|[^\w\s]', de)
    assert the in {t.capitalize() for t in en_de.entries['the']}  # case follows the English word
    assert house in en_de.entries['house'] and points in en_de.entries['points']
    assert (comma, number, bang) == (',', '42', '!')
    assert words(['The house, 42 points!'], 'en', 'de') == [de]  # seeded
    with pytest.raises(UnsupportedLanguageError, match=r'no en-ru lexicon; lexicons: en-de, en-es'):
        translate_train(source, tmp_path / 'ru.jsonl', words, ['de', 'ru'], progress=False)
    assert not (tmp_path / 'ru.jsonl.cache.sqlite').exists()  # refused before any work
    out = translate_train(source, tmp_path / 'words.jsonl', words, ['de', 'es'], progress=False)
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest['kind'].startswith('lexicon word-by-word') and manifest['counts'] == {'en': 9, 'de': 9, 'es': 9}


def test_english_items_from_ir_datasets_json_and_hugging_face(lareqa_dir, tmp_path, english):
    from_irds = english_items('lareqa/xquad-r/en/en', limit=9)  # queries + qrels: the first relevant document
    real = lareqa_items('xquad-r', ['en'])[:9]
    assert [(i.id, i.query, i.positive) for i in from_irds] == [(f'en-{e.id}', e.query, e.positive) for e in real]
    rows = [{'id': e.id, 'question': e.query, 'context': e.positive} for e in english]
    (tmp_path / 'squad.jsonl').write_text('\n'.join(json.dumps(r) for r in rows))
    from_hf = english_items(f'hf:{tmp_path / "squad.jsonl"}')
    assert [(i.id, i.query, i.positive) for i in from_hf] == [(e.id, e.query, e.positive) for e in english]
    import datasets
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / 'saved')
    assert english_items(f'hf:{tmp_path / "saved"}', limit=2) == from_hf[:2]
    with pytest.raises(ValueError, match=r'has no positive column \(columns: id, question\)'):
        datasets.Dataset.from_list([{'id': 1, 'question': 'q'}]).save_to_disk(tmp_path / 'bad')
        english_items(f'hf:{tmp_path / "bad"}')


def test_english_items_from_ir_datasets_docpairs(lareqa_dir, marian, tmp_path):
    import ir_datasets

    dataset_id = mmarco_shaped('en')  # real questions and sentences, as a docpairs training set
    dataset = ir_datasets.load(dataset_id)
    store = dataset.docs_store()
    queries = {q.query_id: q.text for q in dataset.queries_iter()}
    first = list(dataset.docpairs_iter())[:3]
    items = english_items(dataset_id, limit=3)
    assert [(i.id, i.query, i.positive, i.negatives) for i in items] == [
        (p.query_id, queries[p.query_id], store.get(p.doc_id_a).text, (store.get(p.doc_id_b).text,)) for p in first]
    out = translate_train(dataset_id, tmp_path / 'pairs.jsonl', translator(marian), ['de'], limit=3,
                          progress=False)
    assert [(i.id, i.lang, len(i.negatives)) for i in read_items(out)] == [
        (i.id, lang, 1) for i in items for lang in ('en', 'de')]


def test_translate_commands(marian, source, tmp_path, capsys):
    for shard in ('0/2', '1/2'):
        assert main(['translate', str(source), str(tmp_path / 'cli.jsonl'), '--langs', 'de', '--model', str(marian),
                     '--shard', shard, '--batch-size', '4', '--max-length', '128']) == 0
    shards = [str(tmp_path / f'cli.shard-{i}-of-2.jsonl') for i in (0, 1)]
    assert main(['merge-translations', *shards, '--output', str(tmp_path / 'cli.jsonl')]) == 0
    whole = translate_train(source, tmp_path / 'whole.jsonl', translator(marian), ['de'], progress=False)
    assert (tmp_path / 'cli.jsonl').read_text() == whole.read_text()
    assert main(['translate', str(source), str(tmp_path / 'x.jsonl'), '--langs', 'de']) == 2
    assert 'either --model' in capsys.readouterr().err
