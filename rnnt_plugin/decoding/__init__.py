"""Decoding and inference.

- ``greedy``: the plugin's batched greedy search (``strategy: rnnt_plugin_greedy``, the default).
- ``beam``: NeMo's beam search switched on for evaluation and transcription.
- ``streaming``: chunk-by-chunk transcription with carried encoder and decoder states.
- ``onnx_greedy``: torch-free greedy RNN-T transcription over onnxruntime (the deployment loop).
- ``export``: ``.nemo`` -> ONNX/TorchScript export directory for deployment.
"""
