#!/usr/bin/env bash
# The speed checks that need hardware this project's CI machine lacks, as one prepared run:
# a CUDA GPU (fp16 eager, torch.compile, the HTTP server) and, where the host CPU has AMX or
# AVX512-BF16, the CPU targets in bf16 on 2 threads. Built for a lent GPU machine with no
# network: packages it lacks travel as wheels in .whl/ (see the README, "Benchmarks").
#
# The wheels (2026-11-26, for the H100/H200 image's Python 3.12; 9.2 MB), fetched here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 fastapi==0.165.0 \
#     starlette==1.10.0 pydantic==2.14.4 pydantic-core==2.50.5 uvicorn==0.54.0 \
#     typing-extensions typing-inspection annotated-types opentelemetry-api importlib-metadata
# and `.whl/` added to .git/info/exclude. OpenVINO's wheel (59 MB) does not fit the 64 MiB a
# call may carry beside this repository.
#
# Usage: bash benchmarks/device_check.sh [SECONDS]   (total budget, default 530; a full run
# took 530 s on an H200 on 2026-11-26, the machine's start not counted)
# One log and a JSON per step go to $OUT (default /tmp/limner-device). Steps run most
# important first; each gets at most what is left of the budget.
set -u
budget=${1:-530}
deadline=$((SECONDS + budget))
OUT=${OUT:-/tmp/limner-device}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 DIFFUSERS_VERBOSITY=error TRANSFORMERS_VERBOSITY=error
bench=(python3 benchmarks/diffusers_speed.py --root /tmp/limner-bench)

step() {  # step NAME LIMIT_S ARGS...: one benchmark run, cut at LIMIT_S or the budget
    local name=$1 limit=$2 left=$((deadline - SECONDS))
    shift 2
    ((left < limit)) && limit=$left
    if ((limit < 20)); then echo "== $name: skipped, budget spent"; return; fi
    echo "== $name (at most ${limit} s)"
    timeout -k 5 "$limit" "${bench[@]}" "$@" --json "$OUT/$name.json" 2>&1 \
        | tee -a "$OUT/all.log" | grep -v -E "Warning|warn\(|torchvision|^\s*$"
    echo "== $name: exit ${PIPESTATUS[0]} after $SECONDS s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
grep -m1 "model name" /proc/cpuinfo; nproc
grep -o -w -E "amx_bf16|avx512_bf16|avx512f" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
python3 -c "import torch, diffusers, transformers as t, limner.cli, limner.server.app
print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers',
t.__version__, 'cuda', torch.cuda.is_available())" || exit 1

step gpu-eager 170 --device cuda --models sd-turbo,sdxs-512 --backends torch --reps 10 \
    --parts engines
if grep -q -w -E "amx_bf16|avx512_bf16" /proc/cpuinfo; then
    step cpu-bf16 200 --device cpu --threads 2 --models sd-turbo,sdxs-512 --backends torch \
        --reps 2 --parts engines
else
    echo "== cpu-bf16: skipped, this CPU has no bf16 fast path"
fi
step gpu-http 110 --device cuda --models sd-turbo --parts http --http-seconds 10
step gpu-compile-graphs 200 --device cuda --models sd-turbo \
    --backends torch-compile:reduce-overhead --reps 10 --parts engines
if grep -q -w -E "amx_bf16|avx512_bf16" /proc/cpuinfo; then
    # Not yet measured: Inductor (freezing, fused epilogues) on top of bf16 channels_last.
    step cpu-bf16-compile 240 --device cpu --threads 2 --models sd-turbo,sdxs-512 \
        --backends torch-compile --reps 2 --parts engines
fi
echo "== done after $SECONDS s"
