#!/usr/bin/env bash
# The speed checks that need hardware this project's CI machine lacks, as one prepared run:
# a CUDA GPU (fp16 eager, torch.compile, the HTTP server) and, where the host CPU has AMX or
# AVX512-BF16, the CPU targets in bf16 on 2 threads. Built for a lent GPU machine with no
# network: packages it lacks travel in .whl/ (ignored by git), as wheels or as
# .tar.xz archives of an installed package, unpacked where the wheels install.
#
# The wheels (2026-11-26, for the H100/H200 image's Python 3.12), fetched here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib-metadata
# and `.whl/` added to .git/info/exclude. The gpu steps' HTTP server needs fastapi==0.165.0
# starlette==1.10.0 pydantic==2.14.4 pydantic-core==2.50.5 uvicorn==0.54.0 typing-extensions
# typing-inspection annotated-types opentelemetry-api too (9.2 MB with the two above).
# OpenVINO's wheel (59 MB) does not fit the 64 MiB a call may carry beside this repository;
# for the CPU-only OpenVINO backend 20 MB do: unzip the cp312 wheel, delete the GPU and NPU
# plugins, the ONNX, TensorFlow, Paddle, GGUF and JAX frontends (libraries and Python
# folders), libs/cache.json, include/ and cmake/, add openvino_telemetry, and
# `tar -c openvino openvino_telemetry | xz -9e > .whl/openvino-VERSION-cp312-cpu.tar.xz`.
#
# For the int8 step, also `pip download --no-deps ... nncf==3.4.0 pydot` into .whl/.
#
# The families step (benchmarks/families_gpu.py) needs diffusers, importlib-metadata and the
# HTTP server's wheels above, and torchao for its fp8/int8 part (skipped, with the reason in
# its JSON, without it): the same `pip download` with torchao==0.18.0 (3.4 MB; 13.0 MB for
# all twelve wheels, beside a 36 MiB checkout). The image's transformers (5.17.0 in 2026-11)
# has every text encoder it builds (CLIP, T5, Qwen3, Qwen2.5-VL, Gemma 2).
#
# Usage: bash benchmarks/device_check.sh [SECONDS] [all|gpu|cpu|int8|families|families-cpu]
#   SECONDS: the total budget (default 530; on H200 machines in 2026-11 "all" took 530 s and
#   "cpu" was cut at 570 s before its last backends finished, the machine's start not
#   counted).
#   all (default): the gpu steps, then the cpu-bf16 ones; cpu: only the CPU in bf16: the
#   packed and fused calls against torch, memory by stage, every backend (torch, openvino if
#   carried) with SD-Turbo against plain diffusers, agreement with diffusers' own modules in
#   fp32, SDXS-512, glibc's malloc and unfused blocks against limner's defaults, an operator
#   profile. int8: OpenVINO in f32 and bf16, each with and without int8, on SD-Turbo.
#   families: every served family at real size with random weights on the GPU (bf16):
#   plain diffusers against limner (compile = "reduce-overhead") at batch 1, images/s at
#   batch 4 and 8 through the scheduler and over HTTP with 16 clients, torchao fp8; the
#   order, most important first, is $FAMILIES (default below). families-cpu: the same on
#   tiny configs on the CPU, the rehearsal (no compile, no GPU needed).
# One log and a JSON per step go to $OUT (default /tmp/limner-device). Steps run most
# important first; each gets at most what is left of the budget.
set -u
budget=${1:-530}
which=${2:-all}
deadline=$((SECONDS + budget))
OUT=${OUT:-/tmp/limner-device}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
for archive in .whl/*.tar.xz; do
    [[ -f $archive ]] || continue
    mkdir -p /tmp/site && tar -xJf "$archive" -C /tmp/site || exit 1
    export PYTHONPATH=/tmp/site
done
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 DIFFUSERS_VERBOSITY=error TRANSFORMERS_VERBOSITY=error
bench=(python3 benchmarks/diffusers_speed.py --root /tmp/limner-bench)
variants=(python3 benchmarks/engine_variants.py --root /tmp/limner-bench)

step() {  # step NAME LIMIT_S ARGS...: one benchmark run, cut at LIMIT_S or the budget
    run_step "$1" "$2" "${bench[@]}" "${@:3}"
}

run_step() {  # run_step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2 left=$((deadline - SECONDS))
    shift 2
    ((left < limit)) && limit=$left
    if ((limit < 20)); then echo "== $name: skipped, budget spent"; return; fi
    echo "== $name (at most ${limit} s)"
    timeout -k 5 "$limit" "$@" --json "$OUT/$name.json" 2>&1 \
        | tee -a "$OUT/all.log" | grep -v -E "Warning|warn\(|torchvision|^\s*$"
    echo "== $name: exit ${PIPESTATUS[0]} after $SECONDS s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
grep -m1 "model name" /proc/cpuinfo; nproc
command -v g++ || echo "no g++: torch.compile on the CPU will fail"
grep -o -w -E "amx_bf16|avx512_bf16|avx512f" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
python3 -c "import torch, diffusers, transformers as t, limner.engines.diffusers
print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers',
t.__version__, 'cuda', torch.cuda.is_available())" || exit 1
backends=torch
if python3 -c "import openvino; print('openvino', openvino.__version__)"; then
    backends=torch,openvino
fi
bf16_cpu=false
grep -q -w -E "amx_bf16|avx512_bf16" /proc/cpuinfo && bf16_cpu=true

if [[ $which == families || $which == families-cpu ]]; then
    # One process per family, each with what is left of the budget; a family cut short
    # keeps the parts it finished (its JSON is written after each). Compile and CUDA graphs
    # cost a minute or more per family and batch shape: at 540 s expect two to four of them.
    # torch.compile writes its cache under /tmp, so a second call on a warm machine is faster.
    families=${FAMILIES:-sd-turbo,flux1-schnell,z-image-turbo,sdxl-turbo,flux2-klein,qwen-image,sana-sprint}
    left=$((deadline - SECONDS - 10))
    if [[ $which == families ]]; then
        run_step gpu-families "$left" python3 benchmarks/families_gpu.py --device cuda \
            --families "$families" --budget $((left - 10)) --reps 3 --batches 4,8 \
            --http-clients 16 --http-seconds 15 --torchao "${TORCHAO:-fp8-dq}"
    else
        run_step cpu-families "$left" python3 benchmarks/families_gpu.py --device cpu --tiny \
            --families "$families" --budget $((left - 10)) --reps 1 --compile none \
            --http-seconds 3 --torchao int8-wo
    fi
    echo "== done after $SECONDS s"
    exit 0
fi
if [[ $which != cpu ]]; then
    step gpu-eager 170 --device cuda --models sd-turbo,sdxs-512 --backends torch --reps 10 \
        --parts engines
    run_step gpu-agreement 60 python3 benchmarks/agreement.py --root /tmp/limner-bench \
        --device cuda --model sd-turbo --draws 1 --variants '{}'
    if $bf16_cpu; then
        step cpu-bf16 200 --device cpu --threads 2 --models sd-turbo,sdxs-512 \
            --backends torch --reps 2 --parts engines
    fi
    step gpu-http 110 --device cuda --models sd-turbo --parts http --http-seconds 10
    step gpu-compile-graphs 200 --device cuda --models sd-turbo \
        --backends torch-compile:reduce-overhead --reps 10 --parts engines
fi
if ! $bf16_cpu; then
    echo "== cpu steps: skipped, this CPU has no bf16 fast path"
elif [[ $which == cpu ]]; then
    # Most important first, since the budget cuts the last steps. Each kind of packed and
    # fused bf16 call against torch (kernel_check). Memory, on a fresh weight cache, with the
    # pipelines built in a process of their own (building SD-Turbo's takes 5.8 GiB): the
    # converting load, then a load from the cache with more draws (its steady speed). Each
    # limner backend in turns with plain diffusers in one run (the targets: SD-Turbo <= 1.0
    # s and >= 10x; plain drawn once per backend, 16-23 s an image there). Whether the
    # default engine (bf16, packed and fused) computes what diffusers' own modules compute
    # (agreement.py). SDXS-512 (its target is absolute: no plain run). Then, in turns,
    # glibc's own malloc without fused blocks, limner's malloc without them, and the
    # default; and where one image goes by operator. torch-compile was slower than eager
    # there (2026-11-26) and compiles for minutes: left out.
    run_step cpu-kernels 30 python3 -c "import json, sys, torch
from limner.engines.diffusers.accel import kernel_check
torch.set_num_threads(2)
check = {str(layout): kernel_check.run(torch.bfloat16, layout).errors for layout in (False, True)}
print(check); open(sys.argv[-1], 'w').write(json.dumps(check))"
    run_step cpu-build 90 python3 -c "import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path; from random_pipelines import build_pipeline, build_taesd
root = Path('/tmp/limner-bench'); build_taesd(root / 'taesd')
for m in ('sd-turbo', 'sdxs-512'): build_pipeline(m, root)"
    rm -rf /tmp/limner-bench/cache/weights
    run_step cpu-memory-convert 60 python3 benchmarks/memory_stages.py \
        --root /tmp/limner-bench --draws 3
    run_step cpu-memory-cached 60 python3 benchmarks/memory_stages.py \
        --root /tmp/limner-bench --draws 8
    step cpu-sd-turbo 200 --device cpu --threads 2 --models sd-turbo \
        --backends "$backends" --reps 3 --plain-reps 1 --parts engines
    run_step cpu-agreement 90 python3 benchmarks/agreement.py --root /tmp/limner-bench \
        --model sd-turbo --draws 1 --variants '{}'
    step cpu-sdxs 100 --device cpu --threads 2 --models sdxs-512 \
        --backends "$backends" --reps 3 --plain-reps 0 --parts engines
    run_step cpu-variants 170 "${variants[@]}" --device cpu --threads 2 \
        --models sd-turbo,sdxs-512 --reps 3 \
        --variants '{"fuse": false, "malloc": "system"}' '{"fuse": false}' '{}'
    run_step cpu-profile 60 python3 benchmarks/op_profile.py --root /tmp/limner-bench
elif [[ $which == int8 ]]; then
    # int8 against OpenVINO's float32 and bf16 on this CPU (issue 21): each part's error
    # against diffusers' own float32 modules and the speed of each in turns, as
    # benchmarks/results/2026-11-30-int8/ did on AVX512-BF16. Needs the OpenVINO archive and
    # the nncf and pydot wheels in .whl/ (nncf's other needs are in the image).
    run_step cpu-build 60 python3 -c "import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path; from random_pipelines import build_pipeline, build_taesd
root = Path('/tmp/limner-bench'); build_taesd(root / 'taesd'); build_pipeline('sd-turbo', root)"
    run_step cpu-int8 480 python3 benchmarks/agreement.py --root /tmp/limner-bench \
        --model sd-turbo --threads 2 --draws 1 --speed-reps 3 --variants \
        '{"backend": "openvino", "dtype": "float32"}' \
        '{"backend": "openvino", "dtype": "float32", "quantize": "int8"}' \
        '{"backend": "openvino"}' '{"backend": "openvino", "quantize": "int8"}'
else
    step cpu-bf16-compile 240 --device cpu --threads 2 --models sd-turbo,sdxs-512 \
        --backends torch-compile --reps 2 --parts engines
fi
echo "== done after $SECONDS s"
