#!/usr/bin/env bash
# Manifests, the reference sentencepiece tokenizer (unigram, 1023 pieces) and a report for LibriSpeech.
# Usage: scripts/preprocess_librispeech.sh /data/librispeech [--convert-wav] [--shards 64] [--jobs 16] [--strict]
# DATA_DIR holds the extracted subsets (DATA_DIR/LibriSpeech/<subset>/..., as download_librispeech.sh leaves
# them); outputs go to DATA_DIR/manifests/ and DATA_DIR/tokenizer_spe_unigram_v1023/. Extra arguments are passed
# to `python -m rnnt_plugin.data.librispeech prepare` (see its --help); a later --subsets overrides the default.
set -euo pipefail
if [ $# -lt 1 ]; then sed -n 3p "$0" >&2; exit 2; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA_DIR=$(realpath -m "$1"); shift
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
cd "$ROOT"
exec "$PY" -m rnnt_plugin.data.librispeech prepare "$DATA_DIR" \
  --subsets train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other \
  --vocab-size 1023 --max-duration 16.7 "$@"
