"""Export a .nemo (or a training checkpoint) for deployment: ONNX for onnxruntime, or TorchScript.

Usage:
    python examples/export.py model.nemo exported/
    python exported/onnx_greedy.py exported/ a.wav b.flac           # needs only onnxruntime, numpy,
                                                                    # sentencepiece and soundfile
    python examples/transcribe.py --model exported/ DATA/test-sentences
    python examples/export.py model.nemo exported_ts/ --format torchscript

OUT_DIR then holds:
    preprocessor.onnx        audio (B, S) float32 "input_signal" + (B,) int64 "length" -> log-mel features
                             "processed_signal" (B, 80, T) + "processed_length" (B,); the model's dither as a
                             fixed noise sequence (deterministic: the same features as the .nemo in eval mode)
    encoder-model.onnx       "audio_signal" (B, 80, T) + "length" (B,) -> "outputs" (B, D, T') + "encoded_lengths"
    decoder_joint-model.onnx NeMo's RNNTDecoderJoint: one prediction-net step and the joint; inputs
                             "encoder_outputs" (B, D, T'), "targets" (B, 1) int32 (previous symbol, blank at the
                             start), "target_length" (B,) int32, "input_states_1/2" (L, B, H); outputs "outputs"
                             (B, T', 1, V) logits, "prednet_lengths", "output_states_1/2" (L, B, H)
    tokenizer.model          the sentencepiece model (token ids -> text)
    deployment.json          model_name, sample_rate, min_samples, blank_id (V - 1), max_symbols_per_step (30),
                             max_symbol_per_sample (300), dither, format
    onnx_greedy.py           the batched greedy decoding loop (OnnxTranscriber), torch- and NeMo-free
With --format torchscript the three networks are .ts files (torch.jit.load) with the same inputs and outputs,
and there is no decoding loop (TorchScript deployments run in a torch process: use the .nemo there).
"""

import argparse
from pathlib import Path

import rnnt_plugin  # noqa: F401  (registers the plugin with NeMo)
from rnnt_plugin.deploy.export import FORMATS, MAX_SYMBOL_PER_SAMPLE, export_for_deployment
from rnnt_plugin.models import load_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help=".nemo archive or .ckpt training checkpoint")
    parser.add_argument("out_dir", help="directory to write the export into (created if missing)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    parser.add_argument("--max-symbol-per-sample", type=int, default=MAX_SYMBOL_PER_SAMPLE)
    args = parser.parse_args()

    model = load_model(args.model)
    config = export_for_deployment(
        model, args.out_dir, fmt=args.format, model_name=model.cfg.get("name") or Path(args.model).stem, max_symbol_per_sample=args.max_symbol_per_sample,
    )
    print(f"exported {args.model} to {args.out_dir}: {config}")


if __name__ == "__main__":
    main()
