#!/usr/bin/env bash
# The embedded model's training run for a lent GPU machine (issue 22), prepared to the byte:
# no network, nothing to install (the machine's own python3 has torch, numpy, safetensors
# and pillow), only the working tree and the pack carried beside it.
#
# Once, here:  python training/fetch_data.py && python training/pack.py
#              (training/pack/, about 13 MiB, ignored by git: the run carries it)
# There, through the device tool (`run`, timeout_s 600, carry ["training/pack"]):
#     bash training/gpu_train.sh 8
#   and to go on from an earlier run's weights, carry that run's unet.safetensors in a
#   folder the command names, e.g. carry ["training/pack", "training/resume"]:
#     bash training/gpu_train.sh 8 training/resume
#
# MINUTES (default 8) is the training time; loading, compiling and the last export come on
# top (about a minute), so 8 fits the 15 minutes a session is lent with the machine's start.
# $OUT receives unet.safetensors (EMA, fp16, the shipped format), samples.png, log.jsonl
# and train.log, the first two rewritten every 2.5 minutes, so a run cut short still returns
# weights. Rehearse here with the same command: `OUT=/tmp/rehearse bash
# training/gpu_train.sh 0.3` (PYTHON=.venv/bin/python where python3 lacks torch) runs on
# the CPU for 18 seconds and writes the same files.
set -uo pipefail
minutes=${1:-8}
init=${2:-}
OUT=${OUT:-/tmp/limner-train}
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD/src:$PWD/training" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "${PYTHON:-python3}" training/gpu_train.py --pack "${PACK:-training/pack}" --out "$OUT" --minutes "$minutes" \
      ${init:+--init "$init"} "${@:3}"
} 2>&1 | tee -a "$OUT/train.log"
