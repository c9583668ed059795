#!/usr/bin/env bash
# MLPerf RNN-T training on one node through torchrun + Lightning DDP (the 1x4 / 1x8 scripts call this one).
# Usage: scripts/train_rnnt_1x1.sh OUTPUT_DIR DATA_DIR [CHECKPOINT]
#   e.g. scripts/train_rnnt_1x1.sh /results /data/librispeech
#        GLOBAL_BATCH_SIZE=384 BATCH_PER_GPU=6 scripts/train_rnnt_1x8.sh /results /data/librispeech
# DATA_DIR as scripts/preprocess_librispeech.sh leaves it (manifests/, tokenizer_spe_unigram_v1023/). Rerunning
# the same command resumes from OUTPUT_DIR's last checkpoint; CHECKPOINT (a .ckpt) starts from that one instead.
# Every global batch is GLOBAL_BATCH_SIZE utterances whatever NUM_GPUS is, as the MLPerf reference's: BATCH_PER_GPU
# utterances per micro-batch (its 16) and GRAD_ACCUMULATION_STEPS = GLOBAL_BATCH_SIZE / (NUM_GPUS x BATCH_PER_GPU)
# micro-batches per step (8 on 8 GPUs, 64 on one); give GRAD_ACCUMULATION_STEPS instead to derive the micro-batch.
# The script prints what it chose. Without a GPU the same command runs NUM_GPUS CPU processes with gloo.
# Environment overrides of the script (defaults in brackets):
#   NUM_GPUS [1]  GLOBAL_BATCH_SIZE [1024]  BATCH_PER_GPU [16]  GRAD_ACCUMULATION_STEPS [derived]
#   CONFIG [baseline_v3-1023sp]  ACCELERATOR [gpu if nvidia-smi sees one, else cpu]  MASTER_PORT [29500]
#   TRAIN_MANIFESTS [DATA_DIR/manifests/train-{clean-100,clean-360,other-500}.json, comma-separated]
#   VAL_MANIFEST [DATA_DIR/manifests/dev-clean.json]  TOKENIZER_DIR [DATA_DIR/tokenizer_spe_unigram_v1023]
#   EXTRA_ARGS [none: more Hydra overrides, space-separated, e.g. "trainer.max_steps=100"]
# Environment overrides of the config, under the MLPerf reference's names (unset: the config's value):
#   EPOCHS LEARNING_RATE WARMUP_EPOCHS HOLD_EPOCHS LR_EXP_GAMMA MIN_LR WEIGHT_DECAY CLIP_NORM EMA SEED NUM_BUCKETS
#   VAL_BATCH_SIZE MAX_DURATION TARGET_WER NUM_WORKERS
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then sed -n 3p "$0" >&2; exit 2; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTPUT_DIR=$(realpath -m "$1")
DATA_DIR=$(realpath -m "$2")
CHECKPOINT=${3:-}

NUM_GPUS=${NUM_GPUS:-1}
GLOBAL_BATCH_SIZE=${GLOBAL_BATCH_SIZE:-1024}
if [ -z "${GRAD_ACCUMULATION_STEPS:-}" ]; then
  BATCH_PER_GPU=${BATCH_PER_GPU:-16}
  if [ $((GLOBAL_BATCH_SIZE % (NUM_GPUS * BATCH_PER_GPU))) -ne 0 ]; then
    echo "GLOBAL_BATCH_SIZE ($GLOBAL_BATCH_SIZE) is not a multiple of NUM_GPUS x BATCH_PER_GPU" \
      "($((NUM_GPUS * BATCH_PER_GPU)))" >&2
    exit 2
  fi
  GRAD_ACCUMULATION_STEPS=$((GLOBAL_BATCH_SIZE / (NUM_GPUS * BATCH_PER_GPU)))
fi
CONFIG=${CONFIG:-baseline_v3-1023sp}
M=$DATA_DIR/manifests
TRAIN_MANIFESTS=${TRAIN_MANIFESTS:-$M/train-clean-100.json,$M/train-clean-360.json,$M/train-other-500.json}
VAL_MANIFEST=${VAL_MANIFEST:-$DATA_DIR/manifests/dev-clean.json}
TOKENIZER_DIR=${TOKENIZER_DIR:-$DATA_DIR/tokenizer_spe_unigram_v1023}
MASTER_PORT=${MASTER_PORT:-29500}
if [ -z "${ACCELERATOR:-}" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then ACCELERATOR=gpu; else ACCELERATOR=cpu; fi
fi

DIVISOR=$((NUM_GPUS * GRAD_ACCUMULATION_STEPS))
if [ $((GLOBAL_BATCH_SIZE % DIVISOR)) -ne 0 ]; then
  echo "GLOBAL_BATCH_SIZE ($GLOBAL_BATCH_SIZE) is not a multiple of NUM_GPUS x GRAD_ACCUMULATION_STEPS ($DIVISOR)" >&2
  exit 2
fi
BATCH_SIZE=$((GLOBAL_BATCH_SIZE / DIVISOR))
STRATEGY=auto
[ "$NUM_GPUS" -gt 1 ] && STRATEGY=ddp  # gloo on CPU, NCCL on GPU (Lightning's defaults)

PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
ARGS=(
  --config-name "$CONFIG"
  "model.tokenizer.dir=$TOKENIZER_DIR"
  "model.train_ds.manifest_filepath='$TRAIN_MANIFESTS'" "model.validation_ds.manifest_filepath=$VAL_MANIFEST"
  "model.train_ds.batch_size=$BATCH_SIZE"
  "trainer.accelerator=$ACCELERATOR" "trainer.devices=$NUM_GPUS" "trainer.strategy=$STRATEGY"
  "trainer.accumulate_grad_batches=$GRAD_ACCUMULATION_STEPS"
  "exp_manager.exp_dir=$OUTPUT_DIR"
)
# The reference's variable -> the config key it overrides; only variables that are set.
for pair in EPOCHS=trainer.max_epochs LEARNING_RATE=model.optim.lr WARMUP_EPOCHS=model.optim.sched.warmup_epochs \
    HOLD_EPOCHS=model.optim.sched.hold_epochs LR_EXP_GAMMA=model.optim.sched.lr_exp_gamma \
    MIN_LR=model.optim.sched.min_lr WEIGHT_DECAY=model.optim.weight_decay CLIP_NORM=model.optim.max_grad_norm \
    EMA=ema.decay SEED=seed NUM_BUCKETS=model.train_ds.num_buckets VAL_BATCH_SIZE=model.validation_ds.batch_size \
    MAX_DURATION=model.train_ds.max_duration TARGET_WER=mlperf.target_wer NUM_WORKERS=model.train_ds.num_workers; do
  var=${pair%%=*}
  [ -n "${!var:-}" ] && ARGS+=("${pair#*=}=${!var}")
done
# quoted for Hydra: checkpoint names hold '=' (...--val_wer=0.0612-epoch=12-last.ckpt)
[ -n "$CHECKPOINT" ] && ARGS+=("+exp_manager.resume_from_checkpoint='$(realpath "$CHECKPOINT")'")
# shellcheck disable=SC2206  # EXTRA_ARGS is split on spaces on purpose
[ -n "${EXTRA_ARGS:-}" ] && ARGS+=(${EXTRA_ARGS})

mkdir -p "$OUTPUT_DIR"
cd "$ROOT"
echo "GLOBAL_BATCH_SIZE=$GLOBAL_BATCH_SIZE = NUM_GPUS $NUM_GPUS x" \
  "GRAD_ACCUMULATION_STEPS $GRAD_ACCUMULATION_STEPS x batch $BATCH_SIZE ($ACCELERATOR)"
exec "$PY" -m torch.distributed.run --nnodes=1 --nproc_per_node="$NUM_GPUS" \
  --rdzv_backend=c10d --rdzv_endpoint="localhost:$MASTER_PORT" \
  examples/train.py "${ARGS[@]}"
