"""Export a trained model for deployment: featurizer, encoder and decoder+joint (ONNX or TorchScript), tokenizer,
``deployment.json``, and for ONNX the torch-free greedy decoding loop (:mod:`rnnt_plugin.deploy.onnx_greedy`).

``examples/export.py`` is the command-line entry; the tests call :func:`export_for_deployment`.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from rnnt_plugin.core.greedy import MAX_SYMBOL_PER_SAMPLE, MAX_SYMBOLS_PER_STEP
from rnnt_plugin.deploy import onnx_greedy
from rnnt_plugin.models import MLPerfRNNTModel

FORMATS = {"onnx": "onnx", "torchscript": "ts"}  # --format -> file suffix


def export_for_deployment(
    model: MLPerfRNNTModel,
    out_dir: str,
    fmt: str = "onnx",
    dither: Optional[float] = None,
    model_name: Optional[str] = None,
    max_symbol_per_sample: int = MAX_SYMBOL_PER_SAMPLE,
) -> onnx_greedy.DeploymentConfig:
    """Write everything a deployment needs into ``out_dir``; return what ``deployment.json`` holds.

    Files: ``preprocessor.<ext>``, ``encoder-model.<ext>``, ``decoder_joint-model.<ext>`` (ext ``onnx`` or
    ``ts``; NeMo's export machinery and I/O names), ``tokenizer.model`` (sentencepiece), ``deployment.json``,
    and for ONNX ``onnx_greedy.py`` (the decoding loop, runnable on its own). The files are written into a
    temporary directory and moved in place; ``deployment.json`` comes last, so its presence marks a whole export.

    Args:
        model: the model to export (left unchanged: eval mode and dither are restored afterwards).
        fmt: ``onnx`` or ``torchscript``.
        dither: dither std baked into the exported featurizer; None keeps the model's (MLPerf dithers at
            evaluation, 1e-5); 0 gives deterministic features.
        model_name: recorded in ``deployment.json``; default the model config's ``name``, else the class name.
        max_symbol_per_sample: symbols per utterance at most, recorded for the decoding loop.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    if not model.decoder.blank_as_pad:
        raise ValueError("the decoding loop starts from the blank symbol's (zero) embedding: the model's decoder "
                         "needs blank_as_pad: true, as in configs/")
    if dither is not None and dither < 0:
        raise ValueError(f"dither must be >= 0, got {dither}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = FORMATS[fmt]
    preprocessor = model.preprocessor
    config = onnx_greedy.DeploymentConfig(
        model_name=model_name or model.cfg.get("name") or type(model).__name__,
        sample_rate=int(preprocessor._sample_rate),
        min_samples=int(preprocessor.min_samples),
        subsampling_factor=int(model.encoder.subsampling_factor),
        blank_id=model.joint.num_classes_with_blank - 1,
        max_symbols_per_step=int(model.cfg.decoding.get("greedy", {}).get("max_symbols") or MAX_SYMBOLS_PER_STEP),
        max_symbol_per_sample=max_symbol_per_sample,
        dither=float(preprocessor.dither if dither is None else dither),
        format=fmt,
        window_stride=float(model.cfg.preprocessor.window_stride),
    )
    was_training, old_dither = model.training, preprocessor.dither
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        model.eval()
        preprocessor.dither = config.dither
        preprocessor.export(str(staging / f"preprocessor.{ext}"))
        model.export(str(staging / f"model.{ext}"))  # NeMo writes encoder-model.<ext>, decoder_joint-model.<ext>
        (staging / onnx_greedy.TOKENIZER).write_bytes(model.tokenizer.tokenizer.serialized_model_proto())
        if fmt == "onnx":
            shutil.copyfile(onnx_greedy.__file__, staging / "onnx_greedy.py")
        for path in staging.iterdir():
            os.replace(path, out / path.name)
        with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(config), f, indent=2)
            f.write("\n")
        os.replace(f.name, out / onnx_greedy.DEPLOYMENT_CONFIG)
    finally:
        preprocessor.dither = old_dither
        model.train(was_training)
        shutil.rmtree(staging, ignore_errors=True)
    return config
