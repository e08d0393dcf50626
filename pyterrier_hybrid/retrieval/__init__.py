"""Retrieval: encoders as PyTerrier transformers, dense indexes, pooled multilingual retrieval."""
