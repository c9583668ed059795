#!/usr/bin/env bash
# MLPerf RNN-T training on 8 GPUs of one node: scripts/train_rnnt_1x1.sh with NUM_GPUS 8 (the same
# global batch as 1x1, fewer micro-batches per step). Usage: scripts/train_rnnt_1x8.sh OUTPUT_DIR DATA_DIR [CHECKPOINT]
#   e.g. scripts/train_rnnt_1x8.sh /results /data/librispeech; every override of train_rnnt_1x1.sh applies.
set -euo pipefail
export NUM_GPUS=${NUM_GPUS:-8}
exec "$(dirname "$0")/train_rnnt_1x1.sh" "$@"
