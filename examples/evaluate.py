"""Word error rate of a .nemo model or a training checkpoint on one or more manifests, per-utterance output.

Usage:
    python examples/evaluate.py --model model.nemo --manifest DATA/manifests/dev-clean.json \
        --manifest DATA/manifests/test-clean.json --output-dir results/
    python examples/evaluate.py ... --vtln-warps 0.8,0.9,1.0,1.1,1.2    # test-time VTLN (decoding/vtln.py)
    python examples/evaluate.py ... --beam-size 4     # beam search (rnnt_plugin/decoding/beam.py), not greedy

Prints one JSON line per manifest ({"manifest", "wer", "words", "utterances", "predictions"}) and writes
``<output-dir>/<manifest name>.predictions.json`` with text, pred_text and word_errors per utterance.
"""

import argparse
import json
from pathlib import Path

import rnnt_plugin  # noqa: F401  (registers the plugin with NeMo)
from rnnt_plugin.decoding.beam import beam_size_argument, use_beam_search
from rnnt_plugin.decoding.evaluation import evaluate
from rnnt_plugin.models import load_model
from rnnt_plugin.decoding.vtln import use_vtln, warps_argument


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=".nemo archive or .ckpt training checkpoint")
    parser.add_argument("--manifest", required=True, action="append", help="NeMo JSON-lines manifest (repeatable)")
    parser.add_argument("--output-dir", required=True, help="where the per-utterance predictions go")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vtln-warps", type=warps_argument, metavar="A,B,...",
                        help="test-time VTLN over these frequency-warp factors (default: the model's vtln_warps)")
    parser.add_argument("--beam-size", type=beam_size_argument, metavar="N",
                        help="decode with NeMo's beam search of N hypotheses (default: the model's decoding, greedy)")
    args = parser.parse_args()
    names = [Path(m).stem for m in args.manifest]
    if len(set(names)) != len(names):
        parser.error(f"manifests need distinct file names, got {names}")
    model = load_model(args.model)
    if args.vtln_warps is not None:
        use_vtln(model, args.vtln_warps)
    if args.beam_size is not None:
        use_beam_search(model, args.beam_size)
    for manifest, name in zip(args.manifest, names):
        output = Path(args.output_dir) / f"{name}.predictions.json"
        result = evaluate(model, manifest, str(output), args.batch_size)
        print(json.dumps({"manifest": manifest, "wer": result.wer, "words": result.words,
                          "utterances": result.utterances, "predictions": str(output)}), flush=True)


if __name__ == "__main__":
    main()
