"""How much of each language an encoder's vocabulary covers: why an English-only model cannot reach a multilingual
one on other scripts, however it is fine-tuned.

Usage: python benchmarks/vocabulary_coverage.py [--models all-MiniLM-L6-v2 multilingual-e5-small]

Tokenises every XQuAD-R and MLQA-R candidate sentence with each model's tokenizer (no model is run) and reports
per language: the share of its non-space characters that fall inside unknown tokens ([UNK] / <unk>, text the model
cannot see at all), the share of tokens that are single characters (pieces with no meaning of their own: what
WordPiece falls back to for words it lacks), and tokens per 100 characters (how much of the model's 128 or 512
token window a sentence uses). Writes benchmarks/results/vocabulary_coverage.{md,json}.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import ir_datasets
import pandas as pd
from lareqa_table import HERE, offline_model
from transformers import AutoTokenizer

import pyterrier_hybrid  # noqa: F401  (registers lareqa)
from pyterrier_hybrid.atomic import write_atomically


def coverage(tokenizer, texts: list[str]) -> dict[str, float]:
    """Unknown-character share, single-character token share and tokens per 100 characters over ``texts``."""
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    chars = unknown = tokens = single = 0
    for text, ids, offsets in zip(texts, encoded['input_ids'], encoded['offset_mapping']):
        chars += sum(not c.isspace() for c in text)
        tokens += len(ids)
        for token_id, (start, end) in zip(ids, offsets):
            piece = text[start:end].strip()
            if token_id == tokenizer.unk_token_id:
                unknown += sum(not c.isspace() for c in piece)
            elif len(piece) == 1:
                single += 1
    return {'unknown chars %': round(100 * unknown / chars, 2), 'single-char tokens %': round(100 * single / tokens, 2),
            'tokens per 100 chars': round(100 * tokens / chars, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['all-MiniLM-L6-v2', 'multilingual-e5-small'])
    args = parser.parse_args()
    texts = defaultdict(list)
    for collection in ('xquad-r', 'mlqa-r'):
        for doc in ir_datasets.load(f'lareqa/{collection}').docs_iter():
            texts[doc.lang].append(doc.text)
    rows = []
    for name in args.models:
        tokenizer = AutoTokenizer.from_pretrained(offline_model(name))
        for lang in sorted(texts):
            rows.append({'model': name, 'lang': lang, 'sentences': len(texts[lang]),
                         **coverage(tokenizer, texts[lang])})
    table = pd.DataFrame(rows)
    write_atomically(HERE / 'results' / 'vocabulary_coverage.json',
                     lambda tmp: tmp.write_text(json.dumps(rows, indent=1) + '\n'))
    wide = table.pivot(index='lang', columns='model', values=['unknown chars %', 'single-char tokens %',
                                                              'tokens per 100 chars'])
    wide.columns = [f'{measure} ({model})' for measure, model in wide.columns]
    markdown = ('XQuAD-R and MLQA-R candidate sentences (the two collections pooled per language), tokenised by each '
                "model's own tokenizer\n\n" + wide.to_markdown() + '\n')
    write_atomically(HERE / 'results' / 'vocabulary_coverage.md', lambda tmp: tmp.write_text(markdown))
    print(markdown)


if __name__ == '__main__':
    main()
