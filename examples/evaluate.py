"""Word error rate of a .nemo model or a training checkpoint on a manifest, with per-utterance output.

Usage:
    python examples/evaluate.py --model model.nemo --manifest DATA/manifests/dev-clean.json \
        --output dev-clean.predictions.json
"""

import argparse
import json

import rnnt_plugin  # noqa: F401  (registers the plugin with NeMo)
from rnnt_plugin.evaluation import evaluate
from rnnt_plugin.models import load_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=".nemo archive or .ckpt training checkpoint")
    parser.add_argument("--manifest", required=True, help="NeMo JSON-lines manifest with reference text")
    parser.add_argument("--output", required=True, help="per-utterance JSON lines: text, pred_text, word_errors")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    result = evaluate(load_model(args.model), args.manifest, args.output, args.batch_size)
    print(json.dumps({"wer": result.wer, "words": result.words, "utterances": result.utterances}))


if __name__ == "__main__":
    main()
