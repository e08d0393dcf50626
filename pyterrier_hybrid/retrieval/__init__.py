"""Retrieval: encoders as PyTerrier transformers, dense indexes, pooled multilingual retrieval."""

#: encoder backends; each but torch keeps its exports in a folder of its name inside a writable checkpoint
BACKENDS = ('torch', 'onnx', 'openvino')
