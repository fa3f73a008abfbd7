#!/usr/bin/env bash
# AVX2 emulated on the AVX512-BF16 EPYC: oneDNN (torch's and OpenVINO's) capped at AVX2 and
# torch's own kernels at their AVX2 builds, every path in float32, as on the issue's machine.
# Each path twice, one process after another, on a quiet machine.
set -u
cd "$(dirname "$0")"
export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=2
py=../../../.venv/bin/python
$py -c "import torch; print('torch capability', torch.backends.cpu.get_cpu_capability())"
$py - <<'PY'
import numpy as np, openvino as ov
from openvino import opset13 as ops
x = ops.parameter([1, 64, 64, 64], np.float32)
conv = ops.convolution(x, ops.constant(np.ones((64, 64, 3, 3), np.float32)), [1, 1], [1, 1],
                       [1, 1], [1, 1])
compiled = ov.Core().compile_model(ov.Model([conv], [x]), "CPU",
                                   {"INFERENCE_PRECISION_HINT": "f32"})
print("openvino convolution", [op.get_rt_info()["primitiveType"].astype(str)
                               for op in compiled.get_runtime_model().get_ops()
                               if op.get_rt_info()["layerType"].astype(str) == "Convolution"])
PY
for round in 1 2; do
    $py ../2026-11-30-peers/parts.py limner f32
    PYTHONPATH=/tmp/limner-peers-site $py ../2026-11-30-peers/parts.py optimum f32
    $py ../2026-11-30-peers/parts.py torch f32
done
