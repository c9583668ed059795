#!/usr/bin/env bash
# Downloads, verifies (published MD5) and extracts the 7 LibriSpeech subsets (~60 GB) into DATA_DIR/LibriSpeech.
# Usage: scripts/download_librispeech.sh /data/librispeech [--mirror https://openslr.elda.org/resources/12]
#        [--subsets dev-clean test-clean] [--remove-archives]
# Interrupted downloads resume (HTTP Range) on the next run; extracted subsets are skipped. Then run
# scripts/preprocess_librispeech.sh /data/librispeech. Arguments go to `python -m rnnt_plugin.data.download`.
set -euo pipefail
if [ $# -lt 1 ]; then sed -n 3,4p "$0" >&2; exit 2; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
DATA_DIR=$(realpath -m "$1"); shift
cd "$ROOT"
exec "$PY" -m rnnt_plugin.data.download "$DATA_DIR" "$@"
