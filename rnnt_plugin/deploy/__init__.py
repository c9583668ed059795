"""Deployment: ``export`` writes a ``.nemo`` as an ONNX or TorchScript directory, and ``onnx_greedy`` transcribes
with such a directory over onnxruntime alone (no torch, no NeMo; a copy goes into every export directory)."""
