"""Data: LAReQA (and MIRACL) in ir_datasets, parallel training items, artificial code-switching, translate-train."""
