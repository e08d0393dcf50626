"""A tiny randomly initialised Marian MT model with a BPE tokenizer trained on the spot (no download, no
sentencepiece): what the translation tests and benchmarks/translate_speed.py run on."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def build_tiny_marian(path: Path, texts: Iterable[str], *, d_model: int = 32, layers: int = 1,
                      target_tokens: Iterable[str] = ()) -> Path:
    """Save a Marian model and its tokenizer under ``path`` (name it ``opus-mt-en-de`` to give it a pair;
    ``target_tokens`` such as ``>>de<<`` make it a multi-target model)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token='<unk>'))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    special = ['<pad>', '</s>', '<unk>', *target_tokens]
    tokenizer.train_from_iterator(list(texts), trainers.BpeTrainer(vocab_size=400, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single='$A </s>', special_tokens=[('</s>', tokenizer.token_to_id('</s>'))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token='<pad>', eos_token='</s>',
                                   unk_token='<unk>', model_max_length=512)
    pad, eos = tokenizer.token_to_id('<pad>'), tokenizer.token_to_id('</s>')
    config = MarianConfig(vocab_size=tokenizer.get_vocab_size(), d_model=d_model, encoder_layers=layers,
                          decoder_layers=layers, encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model, max_position_embeddings=512,
                          pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos,
                          init_std=1.0)  # peaked logits: greedy decoding without near-ties
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path
