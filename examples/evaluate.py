"""Word error rate of a .nemo model or a training checkpoint on one or more manifests, per-utterance output.

Usage:
    python examples/evaluate.py --model model.nemo --manifest DATA/manifests/dev-clean.json \
        --manifest DATA/manifests/test-clean.json --output-dir results/
    python examples/evaluate.py ... --vtln-warps 0.8,0.9,1.0,1.1,1.2    # with test-time VTLN (rnnt_plugin/vtln.py)

Prints one JSON line per manifest ({"manifest", "wer", "words", "utterances", "predictions"}) and writes
``<output-dir>/<manifest name>.predictions.json`` with text, pred_text and word_errors per utterance.
"""

import argparse
import json
from pathlib import Path

import rnnt_plugin  # noqa: F401  (registers the plugin with NeMo)
from rnnt_plugin.evaluation import evaluate
from rnnt_plugin.models import load_model
from rnnt_plugin.vtln import use_vtln, warps_argument


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=".nemo archive or .ckpt training checkpoint")
    parser.add_argument("--manifest", required=True, action="append", help="NeMo JSON-lines manifest (repeatable)")
    parser.add_argument("--output-dir", required=True, help="where the per-utterance predictions go")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vtln-warps", type=warps_argument, metavar="A,B,...",
                        help="test-time VTLN over these frequency-warp factors (default: the model's vtln_warps)")
    args = parser.parse_args()
    names = [Path(m).stem for m in args.manifest]
    if len(set(names)) != len(names):
        parser.error(f"manifests need distinct file names, got {names}")
    model = load_model(args.model)
    if args.vtln_warps is not None:
        use_vtln(model, args.vtln_warps)
    for manifest, name in zip(args.manifest, names):
        output = Path(args.output_dir) / f"{name}.predictions.json"
        result = evaluate(model, manifest, str(output), args.batch_size)
        print(json.dumps({"manifest": manifest, "wer": result.wer, "words": result.words,
                          "utterances": result.utterances, "predictions": str(output)}), flush=True)


if __name__ == "__main__":
    main()
