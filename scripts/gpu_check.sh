#!/usr/bin/env bash
# The prepared GPU check, for the day a GPU is lent: about 8 minutes on one H100, every section under its own
# timeout, each writing its JSON into OUT as it finishes (a section that fails or times out does not stop the rest).
# Needs torch with CUDA, numba (or numba-cuda) and pytest; no NeMo, no network.
#   OUT=/tmp/gpu_check scripts/gpu_check.sh            # on the GPU machine, from the repository root
#   OUT=/tmp/gpu_check scripts/gpu_check.sh --dry-run  # the CPU, tiny shapes (the tests run this); the sanitizer,
#                                                      # loss timing and launch sweep need a GPU (the sweep's code
#                                                      # runs under Numba's simulator in tests/test_loss_cuda_sim.py)
# Sections: env, loss_correctness, sanitizer (compute-sanitizer memcheck of a tiny loss, where installed),
# loss_speed (benchmarks/loss.py --gpu: vs one log_softmax and a device copy), launch_sweep (the loss's launch
# settings, timed into OUT/launch_table.json, never the package's table), train_step, greedy.
# SUMMARY: OUT/summary.json lists each section's exit status and seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a directory for the results}
DRY=()
[ "${1:-}" = "--dry-run" ] && DRY=(--dry-run)
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
mkdir -p "$OUT"
declare -A STATUS SECONDS_TAKEN

section() {  # section NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name (timeout ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  STATUS[$name]=$?
  SECONDS_TAKEN[$name]=$((SECONDS - start))
  tail -n 3 "$OUT/$name.log"
}

section env 30 "$PY" benchmarks/gpu_check.py env --out "$OUT" "${DRY[@]}"
section loss_correctness 90 "$PY" benchmarks/gpu_check.py loss_correctness --out "$OUT" "${DRY[@]}"
if [ ${#DRY[@]} -eq 0 ]; then
  if command -v compute-sanitizer >/dev/null; then
    section sanitizer 60 compute-sanitizer --tool memcheck --error-exitcode 3 "$PY" -c \
      "import torch; from rnnt_plugin.losses import rnnt_loss; x = torch.randn(2, 5, 4, 9, device='cuda', requires_grad=True); rnnt_loss(x, torch.randint(0, 8, (2, 3), device='cuda'), torch.tensor([5, 3], device='cuda'), torch.tensor([3, 1], device='cuda')).backward(); torch.cuda.synchronize()"
  fi
  section loss_speed 60 "$PY" benchmarks/loss.py --gpu
  section launch_sweep 60 "$PY" -m rnnt_plugin.losses.tune --table "$OUT/launch_table.json"
fi
section train_step 120 "$PY" benchmarks/gpu_check.py train_step --out "$OUT" "${DRY[@]}"
section greedy 60 "$PY" benchmarks/gpu_check.py greedy --out "$OUT" "${DRY[@]}"

{
  echo "{"
  first=1
  for name in "${!STATUS[@]}"; do
    [ $first -eq 1 ] || echo ","
    first=0
    printf '  "%s": {"exit": %d, "seconds": %d}' "$name" "${STATUS[$name]}" "${SECONDS_TAKEN[$name]}"
  done
  echo
  echo "}"
} > "$OUT/summary.json"
cat "$OUT/summary.json"
for name in "${!STATUS[@]}"; do [ "${STATUS[$name]}" -eq 0 ] || exit 1; done
