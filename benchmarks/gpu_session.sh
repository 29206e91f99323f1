#!/usr/bin/env bash
# Everything a GPU session measures, in one run of about 8 minutes (device time is short):
#   1. the GPU tests (CPU = GPU results; fast path = eager path on the GPU, CUDA graphs included),
#   2. the step benchmark on the GPU (n = 128, 256; B = 32),
#   3. 60-second trainer pace runs: copy KF-RTRL and exact RTRL (n = 128, B = 16), OK-16 (official
#      scaling) copy n = 128, PTB KF-RTRL (n = 256, B = 32).
# Usage, from the repository root, with the character-level PTB files in $PTB_DIR (default .ptb):
#   OUT=results/gpu bash benchmarks/gpu_session.sh
# On the device tool: carry .ptb (a copy of ../shared/data/ptb) and run with OUT unset there ($OUT
# is the folder that comes back). Try it here first: DEVICE=cpu SIZES="16 32" SECONDS_PER_RUN=2 bash benchmarks/gpu_session.sh
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu}
DEVICE=${DEVICE:-cuda}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-60}
PTB_DIR=${PTB_DIR:-.ptb}
PY=${PYTHON:-python3}
SIZES=${SIZES:-128 256}
mkdir -p "$OUT"
{ date -u; nvidia-smi 2>/dev/null || echo "no nvidia-smi"; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"; git rev-parse HEAD 2>/dev/null; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_fast_path.py tests/test_training.py -k "gpu or fast" 2>&1 | tee "$OUT/gpu_tests.txt" | tail -5
$PY benchmarks/step_cost.py --device "$DEVICE" --sizes $SIZES --threads 8 --json "$OUT/step_cost_gpu.json" > "$OUT/step_cost_gpu.txt" 2>&1
tail -25 "$OUT/step_cost_gpu.txt"
$PY benchmarks/trainer_pace.py --device "$DEVICE" --threads 8 --seconds "$SECONDS_PER_RUN" --data-dir "$PTB_DIR" \
    --json "$OUT/pace_gpu.json" copy:kf-rtrl:128:16 copy:rtrl:128:16 copy:ok-16-official:128:16 ptb:kf-rtrl:256:32 \
    2>&1 | tee "$OUT/pace_gpu.txt"
