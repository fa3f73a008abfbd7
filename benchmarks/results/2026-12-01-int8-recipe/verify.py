"""Check limner's own quantize_model (limner-int8-3) on the sweep's data: the 17 calibration
inputs are exactly limner's calibration draws (8 draws, 1-, 2-, 4-step)."""
import glob
import pickle
import sys
import time

sys.path.insert(0, "/tmp/int8-sweep")
import numpy as np
import sweep

from limner.engines.diffusers.accel.openvino import INT8_RECIPE, KEPT_IN_FLOAT, quantize_model

d = sweep.load()
with open(sweep.WORK / "refs.pkl", "rb") as f:
    refs, _ = pickle.load(f)
tiny = next(x for x in glob.glob("/tmp/limner-int8h/cache/openvino/tiny_decoder-*/model.xml")
            if "-int8-" not in x)
names = [op.get_friendly_name() for op in sweep.core.read_model(tiny).get_ordered_ops()
         if op.get_type_name() in ("Convolution", "MatMul")]
print("tiny decoder layers matching KEPT_IN_FLOAT:", [n for n in names if KEPT_IN_FLOAT.search(n)])
f32 = sweep.core.compile_model(sweep.static(sweep.core.read_model(d["xml"]), d["test"][0]),
                               "CPU", sweep.CONFIG)
t = time.time()
q = quantize_model(sweep.core.read_model(d["xml"]), d["calib"][:17], "unet")
qt = time.time() - t
rel, ms, outs, f32_ms = sweep.evaluate(q, d["test"], refs, f32)
print(f"| limner quantize_model ({INT8_RECIPE}) | {rel:.2e} | {sweep.REL999:.2e} | {ms:.0f} | "
      f"{f32_ms:.0f} | {f32_ms / ms:.2f}x | {qt:.0f} s |")
for x, y, r in zip(d["test"], outs, refs, strict=False):
    print(f"  t={float(x['timestep'][0]):.0f}: {np.linalg.norm(y - r) / np.linalg.norm(r):.2e}")
