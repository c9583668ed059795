"""Convert a checkpoint of the MLPerf reference training script into an MLPerfRNNTModel ``.nemo``.

    python -m rnnt_plugin.models.convert results/RNN-T_best_checkpoint.pt --config configs/baseline_v3-1023sp.yaml \
        --tokenizer-dir DATA/tokenizer_spe_unigram_v1023 --out rnnt.nemo

The reference (mlcommons/training ``rnn_speech_recognition/pytorch``, ``rnnt/model.py``) saves
``{'epoch', 'step', 'best_wer', 'state_dict', 'ema_state_dict', 'optimizer', 'amp'}``; ``ema_state_dict`` is None
without an EMA. Its parameter names map to ours one to one:

    encoder.pre_rnn.lstm.*     -> encoder.pre_lstm.lstm.*           (input features spliced in the same order)
    encoder.post_rnn.lstm.*    -> encoder.post_lstm.lstm.*          (stack-time concatenates in the same order)
    prediction.embed.weight    -> decoder.prediction.embed.weight   (V - 1 rows; ours has a zero blank row last)
    prediction.dec_rnn.lstm.*  -> decoder.prediction.dec_rnn.lstm.*
    joint_enc.*, joint_pred.*  -> joint.enc.*, joint.pred.*
    joint_net.2.*              -> joint.joint_net.<last>.*         (ReLU, Dropout, Linear; NeMo drops Dropout at p=0)

Token ids are the sentencepiece ids in both, and blank is the last output in both.
"""

import argparse
import os
import re
import sys
import tempfile
from typing import Dict, Optional

import torch

_LSTM_PARAM = r"(weight_ih|weight_hh|bias_ih|bias_hh)_l\d+"
_RENAMES = [  # (reference pattern, our name template)
    (rf"encoder\.pre_rnn\.lstm\.({_LSTM_PARAM})", r"encoder.pre_lstm.lstm.\1"),
    (rf"encoder\.post_rnn\.lstm\.({_LSTM_PARAM})", r"encoder.post_lstm.lstm.\1"),
    (r"prediction\.embed\.weight", "decoder.prediction.embed.weight"),
    (rf"prediction\.dec_rnn\.lstm\.({_LSTM_PARAM})", r"decoder.prediction.dec_rnn.lstm.\1"),
    (r"joint_enc\.(weight|bias)", r"joint.enc.\1"),
    (r"joint_pred\.(weight|bias)", r"joint.pred.\1"),
    (r"joint_net\.2\.(weight|bias)", r"joint.joint_net.{last}.\1"),
]
WEIGHTS_CHOICES = ("auto", "ema", "raw")


class ConversionError(ValueError):
    """The reference state dict does not fit the target model; the message lists every problem."""


def select_state_dict(checkpoint: dict, weights: str = "auto") -> Dict[str, torch.Tensor]:
    """The reference state dict to convert: ``ema_state_dict`` ('ema', or 'auto' when present), else ``state_dict``.

    A bare state dict (no 'state_dict' key) is taken as it is. A 'module.' prefix (DistributedDataParallel) is
    dropped.
    """
    if weights not in WEIGHTS_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHTS_CHOICES}, got {weights!r}")
    if not isinstance(checkpoint, dict):
        raise TypeError(f"checkpoint: expected a dict, got {type(checkpoint).__name__}")
    if "state_dict" not in checkpoint:
        if weights == "ema":
            raise ValueError("weights='ema': the checkpoint is a bare state dict without 'ema_state_dict'")
        state = checkpoint
    else:
        ema = checkpoint.get("ema_state_dict")
        if weights == "ema" and ema is None:
            raise ValueError("weights='ema': the checkpoint's 'ema_state_dict' is missing or None")
        state = ema if weights in ("ema", "auto") and ema is not None else checkpoint["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def convert_state_dict(reference: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a reference state dict onto ``target`` (our model's ``state_dict()``: names and shapes).

    Returns a state dict with exactly ``target``'s keys. Raises ConversionError listing unexpected reference keys,
    target keys left without a value, and shape mismatches (reference name, its shape, our name, our shape).
    """
    joint_linear = sorted(int(m.group(1)) for k in target if (m := re.fullmatch(r"joint\.joint_net\.(\d+)\.weight", k)))
    if not joint_linear:
        raise ConversionError("target state dict has no joint.joint_net.<i>.weight: not an MLPerfRNNTModel")
    renames = [(re.compile(p), t.replace("{last}", str(joint_linear[-1]))) for p, t in _RENAMES]

    converted, unexpected, mismatched, seen = {}, [], [], set()
    for name, value in reference.items():
        ours = next((rx.sub(t, name) for rx, t in renames if rx.fullmatch(name)), None)
        if ours is None or ours not in target:
            unexpected.append(name)
            continue
        want = target[ours]
        seen.add(ours)
        if ours == "decoder.prediction.embed.weight" and value.dim() == 2 and value.shape[0] + 1 == want.shape[0]:
            # The reference embeds pieces only; blank (last) is our padding row, zero as NeMo keeps it.
            value = torch.cat([value, value.new_zeros(1, value.shape[1])])
        if tuple(value.shape) != tuple(want.shape):
            mismatched.append(f"{name} {tuple(value.shape)} -> {ours} {tuple(want.shape)}")
            continue
        converted[ours] = value.to(want.dtype)
    missing = sorted(set(target) - seen)
    problems = []
    if unexpected:
        problems.append(f"unexpected reference keys: {', '.join(sorted(unexpected))}")
    if missing:
        problems.append(f"model keys with no reference value: {', '.join(missing)}")
    if mismatched:
        problems.append(f"shape mismatches (reference -> ours): {'; '.join(mismatched)}")
    if problems:
        raise ConversionError("cannot convert the reference state dict: " + " | ".join(problems))
    return converted


def load_reference_checkpoint(path: str, weights: str = "auto") -> Dict[str, torch.Tensor]:
    """Read a reference checkpoint with ``torch.load(weights_only=True)`` and select its weights."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"reference checkpoint not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - torch raises several unpickling error types
        raise ValueError(f"{path}: not a torch checkpoint readable with weights_only=True ({e})") from e
    return select_state_dict(checkpoint, weights)


def convert_checkpoint(checkpoint_path: str, config_path: str, tokenizer_dir: str, out: str,
                       weights: str = "auto", overrides: Optional[list] = None):
    """Build the model of ``config_path`` (a Hydra YAML with ``model:``), load the converted weights, save ``out``."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnt_plugin.models import MLPerfRNNTModel

    config = Path(config_path).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {config_path}")
    if not (Path(tokenizer_dir) / "tokenizer.model").is_file():
        raise FileNotFoundError(f"tokenizer-dir: no tokenizer.model in {tokenizer_dir}")
    reference = load_reference_checkpoint(checkpoint_path, weights)
    with initialize_config_dir(config_dir=str(config.parent), version_base=None):
        cfg = compose(config_name=config.stem, overrides=list(overrides or []))
    with open_dict(cfg.model):
        cfg.model.tokenizer.dir = str(Path(tokenizer_dir).resolve())
        for split in ("train_ds", "validation_ds"):
            if split in cfg.model:
                cfg.model[split].manifest_filepath = None  # a converted model has no training data attached
        cfg.model.pop("ctc_warmup", None)  # nor a CTC warm-up head: the reference has none
    model = MLPerfRNNTModel(cfg=cfg.model)
    model.load_state_dict(convert_state_dict(reference, model.state_dict()))
    out_dir = Path(out).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".convert.") as tmp:
        model.eval().save_to(str(Path(tmp) / "model.nemo"))
        os.replace(Path(tmp) / "model.nemo", out)  # readers never see a half-written archive
    return model


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint written by the reference's train.py")
    parser.add_argument("--config", required=True, help="model YAML, e.g. configs/baseline_v3-1023sp.yaml")
    parser.add_argument("--tokenizer-dir", required=True, help="directory of the 1023-piece tokenizer.model")
    parser.add_argument("--out", required=True, help="the .nemo to write")
    parser.add_argument("--weights", choices=WEIGHTS_CHOICES, default="auto",
                        help="ema: the EMA weights; raw: the trained weights; auto (default): EMA when present")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides of the config, e.g. model.decoding.strategy=greedy")
    args = parser.parse_intermixed_args(argv)
    try:
        convert_checkpoint(args.checkpoint, args.config, args.tokenizer_dir, args.out, args.weights, args.overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
