"""Decoding and inference.

- ``onnx_greedy``: torch-free greedy RNN-T transcription over onnxruntime (the deployment loop).
- ``export``: ``.nemo`` -> ONNX/TorchScript export directory for deployment.
"""
