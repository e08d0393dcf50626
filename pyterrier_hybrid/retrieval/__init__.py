"""Retrieval: encoders as PyTerrier transformers, dense indexes, pooled multilingual retrieval."""

#: encoder backends; each keeps what it writes into a writable checkpoint (exports; torch: its int8 gate verdict) in a
#: folder of its name, which is not part of the checkpoint's identity (pyterrier_hybrid.checkpoints)
BACKENDS = ('torch', 'onnx', 'openvino')
