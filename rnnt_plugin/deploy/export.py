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
    model_name: Optional[str] = None,
    max_symbol_per_sample: int = MAX_SYMBOL_PER_SAMPLE,
) -> onnx_greedy.DeploymentConfig:
    """Write everything a deployment needs into ``out_dir``; return what ``deployment.json`` holds.

    Files: ``preprocessor.<ext>``, ``encoder-model.<ext>``, ``decoder_joint-model.<ext>`` (ext ``onnx`` or
    ``ts``; NeMo's export machinery and I/O names), ``tokenizer.model`` (sentencepiece), ``deployment.json``,
    and for ONNX ``onnx_greedy.py`` (the decoding loop, runnable on its own). The files are written into a
    temporary directory and moved in place; ``deployment.json`` comes last, so its presence marks a whole export.

    Args:
        model: the model to export (left as it was: mode and inference dither are restored afterwards). The
            exported featurizer adds the model's dither as the fixed noise sequence (``inference_dither: fixed``,
            :mod:`rnnt_plugin.core.features`), so the export gives the same features as the model in eval mode.
        fmt: ``onnx`` or ``torchscript``.
        model_name: recorded in ``deployment.json``; default the model config's ``name``, else the class name.
        max_symbol_per_sample: symbols per utterance at most, recorded for the decoding loop.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    if not model.decoder.blank_as_pad:
        raise ValueError("the decoding loop starts from the blank symbol's (zero) embedding: the model's decoder "
                         "needs blank_as_pad: true, as in configs/")
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
        dither=float(preprocessor.dither),
        format=fmt,
        window_stride=float(model.cfg.preprocessor.window_stride),
    )
    log_mel = preprocessor.log_mel
    was_training, inference_dither = model.training, log_mel.inference_dither
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        model.eval()
        log_mel.inference_dither = "fixed"  # a deployment gives the same text every run
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
        log_mel.inference_dither = inference_dither
        model.train(was_training)
        shutil.rmtree(staging, ignore_errors=True)
    return config
