"""Throwaway int8 recipe sweep for limner's OpenVINO UNet (SD-Turbo, random weights).

  python sweep.py prepare            # build pipeline, convert (limner's engine), record inputs
  python sweep.py run RECIPE [...]   # quantize the f32 UNet IR with each recipe, measure

Errors: relative error ||y-ref||/||ref|| over the 8 held-out UNet inputs (pooled), against
the f32 IR compiled as limner compiles it (LATENCY, 2 threads, f32 inference precision).
Speed: median ms of 5 calls on one held-out input after a warm-up, static 1x4x64x64 shapes.
"""
from __future__ import annotations

import glob
import logging
import os
import pickle
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
import openvino as ov

MODEL = os.environ.get("SWEEP_MODEL", "sd-turbo")  # or sdxs-512
ROOT = Path("/tmp/limner-int8h")
WORK = Path("/tmp/int8-sweep/work" + ("" if MODEL == "sd-turbo" else f"-{MODEL}"))
CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
          "INFERENCE_NUM_THREADS": 2}
core = ov.Core()
REL999 = 0.0


def prepare() -> None:
    import torch
    torch.set_num_threads(2)
    sys.path.insert(0, "/work/main/benchmarks")
    from random_pipelines import build_pipeline, build_taesd

    from limner.engines.diffusers import DiffusersEngine
    from limner.engines.diffusers.accel import openvino as ovb
    from limner.engines.diffusers.presets import PRESETS
    from limner.jobs import GenerationParams

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    WORK.mkdir(parents=True, exist_ok=True)
    folder = build_pipeline(MODEL, ROOT)
    taesd = build_taesd(ROOT / "taesd")
    opts = {**PRESETS[MODEL].engine_options(), "cache_dir": str(ROOT / "cache"),
            "backend": "openvino", "dtype": "float32", "cache_weights": False}
    e = DiffusersEngine(str(folder), threads=2, tiny_decoder=str(taesd), **opts)
    e.load()
    runner = e.pipe.unet.runner
    steps = sorted({e.steps[q] for q in ("low", "medium", "high")})  # [1, 2, 4]
    runner.recorded = []
    # 24 calibration draws: the first 8 are exactly limner's calibration (17 UNet inputs)
    for p in ovb.calibration_requests(24, steps, 512):
        e.generate([p])
    calib = runner.recorded
    runner.recorded = []
    for i in range(4):  # held out: other prompts and seeds, 1-, 2-, 4-, 1-step
        e.generate([GenerationParams(prompt=f"held out prompt number {i}, a cat on a roof",
                                     width=512, height=512, seeds=(100 + i,),
                                     steps=steps[i % len(steps)])])
    test = runner.recorded
    runner.recorded = None
    xml = [x for x in glob.glob(str(ROOT / "cache/openvino/unet-*/model.xml"))
           if "-int8-" not in x]
    xml = [max(xml, key=os.path.getmtime)]  # the one this engine converted last
    with open(WORK / "data.pkl", "wb") as f:
        pickle.dump({"calib": calib, "test": test, "xml": xml[0]}, f)
    print(f"calib {len(calib)} test {len(test)} xml {xml[0]}")


def load() -> dict:
    with open(WORK / "data.pkl", "rb") as f:
        d: dict = pickle.load(f)
    return d


def static(model: ov.Model, x: dict[str, np.ndarray]) -> ov.Model:
    model = model.clone()
    model.reshape({k: ov.PartialShape(list(v.shape)) for k, v in x.items()})
    return model


def evaluate(model: ov.Model, test: list, refs: list | None,
             f32: ov.CompiledModel | None = None) -> tuple[float, float, list, float]:
    """Relative error on `test`; then median ms of 5 calls, in turns with `f32` (the f32 IR,
    compiled once) so that both see the same load (the machine is shared): (err, ms, outs,
    f32 ms in the same turns). `model` is saved and read back first, as limner runs it."""
    if refs is not None:
        ov.save_model(model, WORK / "q.xml", compress_to_fp16=True)
        model = core.read_model(WORK / "q.xml")
    compiled = core.compile_model(static(model, test[0]), "CPU", CONFIG)
    outs = [np.asarray(compiled(x)[0]).copy() for x in test]
    rel = 0.0
    if refs is not None:
        num = sum(float(np.sum((y - r) ** 2)) for y, r in zip(outs, refs, strict=False))
        den = sum(float(np.sum(r ** 2)) for r in refs)
        rel = (num / den) ** 0.5
        hi = [(y, r) for x, y, r in zip(test, outs, refs, strict=False)
              if float(x["timestep"][0]) > 900]
        global REL999
        REL999 = (sum(float(np.sum((y - r) ** 2)) for y, r in hi)
                  / sum(float(np.sum(r ** 2)) for _, r in hi)) ** 0.5
    compiled(test[0])
    ts, fs = [], []
    for _ in range(5):
        t = time.perf_counter()
        compiled(test[0])
        ts.append(time.perf_counter() - t)
        if f32 is not None:
            t = time.perf_counter()
            f32(test[0])
            fs.append(time.perf_counter() - t)
    f32_ms = statistics.median(fs) * 1000 if fs else 0.0
    return rel, statistics.median(ts) * 1000, outs, f32_ms


def kept_names(model: ov.Model, groups: str) -> list[str]:
    convs = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() == "Convolution"]
    mms = [op.get_friendly_name() for op in model.get_ordered_ops()
           if op.get_type_name() in ("Convolution", "MatMul")]
    names: list[str] = []
    for g in groups.split("+"):
        if g == "base":  # limner-int8-2
            names += [n for i, n in enumerate(convs)
                      if i in (0, len(convs) - 1) or "conv_shortcut" in n]
        elif g == "to_out":
            names += [n for n in mms if ".to_out" in n]
        elif g == "qkv":  # the softmax-adjacent projections
            names += [n for n in mms if ".to_q" in n or ".to_k" in n or ".to_v" in n]
        elif g == "attn":
            names += [n for n in mms if ".attn1." in n or ".attn2." in n]
        elif g == "res":
            names += [n for n in mms if ".resnets." in n]
        elif g in CATEGORIES:
            names += [n for n in mms if CATEGORIES[g](n)]
        elif g.startswith("file@"):  # layer names, one a line (an accuracy-control result)
            names += [n for n in Path(g[5:]).read_text().split() if n in mms]
        elif g:
            names += [n for n in mms if g in n]
    return sorted(set(names))


def float_layers(model: ov.Model) -> list[str]:
    """Convolutions and weight MatMuls whose activation input is not fake-quantized."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "MatMul"):
            continue
        w = op.input_value(1).get_node()
        if w.get_type_name() not in ("Constant", "Convert", "Multiply", "FakeQuantize",
                                     "Subtract"):
            continue  # activation x activation
        if op.input_value(0).get_node().get_type_name() != "FakeQuantize":
            out.append(op.get_friendly_name())
    return out


def recipe(name: str, model: ov.Model, calib: list, test: list, refs: list):
    """name: key=value pairs joined by ':'  e.g.  n=56:keep=base:range=MINMAX:aac=0.02"""
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    parts = dict(p.split("=", 1) for p in name.split(":") if p)
    n = int(parts.get("n", 17))
    samples = calib[:n]
    names = kept_names(model, parts.get("keep", "base"))
    kept = nncf.IgnoredScope(names=names, validate=False) if names else None
    adv: dict = {"smooth_quant_alpha": -1}
    if "range" in parts:
        adv["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet,
                                                            parts["range"])
    kwargs = dict(model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED,
                  ignored_scope=kept, subset_size=len(samples),
                  fast_bias_correction=parts.get("fbc", "1") == "1")
    if "aac" not in parts:
        return nncf.quantize(model, nncf.Dataset(samples),
                             advanced_parameters=nncf.AdvancedQuantizationParameters(**adv),
                             **kwargs)
    # accuracy control: metric = -(pooled relative error vs the f32 IR) on a validation set
    # of held-out-like inputs; max_drop (absolute) = the error allowed.
    # validation inputs: never the held-out test inputs; by default the recorded draws that
    # follow the calibration ones (other prompts and seeds of the same kind)
    nval = int(parts.get("nval", 4))
    val = samples[-nval:] if parts.get("val") == "calib" else calib[n:n + nval]
    if len(val) < nval:
        raise ValueError("not enough recorded inputs for validation")
    if True:
        f32 = core.compile_model(static(model, val[0]), "CPU", CONFIG)
        val_refs = {id(x): np.asarray(f32(x)[0]).copy() for x in val}
        del f32
    calls = {"n": 0, "t": time.time()}

    def validate(compiled, data) -> tuple[float, list[float]]:
        # metric mode: 1 - the pooled relative error (higher is better; f32: exactly 1), per
        # item too
        num = den = 0.0
        items = []
        for x in data:
            y = np.asarray(compiled(x)[0])
            r = val_refs[id(x)]
            a, b = float(np.sum((y - r) ** 2)), float(np.sum(r ** 2))
            num, den = num + a, den + b
            items.append(1.0 - (a / b) ** 0.5)
        calls["n"] += 1
        err = (num / den) ** 0.5
        print(f"    validate #{calls['n']} ({len(items)} items, {time.time() - calls['t']:.0f} s):"
              f" err {err:.3e}", flush=True)
        return 1.0 - err, items

    acc = nncf.AdvancedAccuracyRestorerParameters(
        max_num_iterations=int(parts.get("iters", 30)),
        ranking_subset_size=int(parts.get("rank", 2)),
        num_ranking_workers=int(parts.get("workers", 1)))
    if parts.get("rerank") == "0":  # keep the first ranking (each ranking compiles ~200 models)
        from nncf.quantization.algorithms.accuracy_control.ranker import Ranker
        first = Ranker.rank_groups_of_quantizers
        seen = {"n": 0}

        def once(self, groups, *a, **k):
            seen["n"] += 1
            if seen["n"] > 1:
                print("    (re-ranking skipped)", flush=True)
                return list(groups)
            t = time.time()
            out = first(self, groups, *a, **k)
            print(f"    ranked {len(groups)} groups in {time.time() - t:.0f} s", flush=True)
            return out
        Ranker.rank_groups_of_quantizers = once
    static_model = static(model, samples[0])
    return nncf.quantize_with_accuracy_control(
        static_model, nncf.Dataset(samples), nncf.Dataset(val), validate,
        max_drop=float(parts["aac"]), drop_type=nncf.DropType.ABSOLUTE,
        advanced_quantization_parameters=nncf.AdvancedQuantizationParameters(**adv),
        advanced_accuracy_restorer_parameters=acc, **kwargs)


def run(names: list[str]) -> None:
    import nncf
    warnings.simplefilter("ignore")
    nncf.set_log_level(logging.INFO if os.environ.get("NNCF_LOG") else logging.ERROR)
    d = load()
    calib, test = d["calib"], d["test"]
    ref_path = WORK / "refs.pkl"
    if ref_path.is_file():
        with open(ref_path, "rb") as f:
            refs, f32_ms = pickle.load(f)
    else:
        _, f32_ms, refs, _ = evaluate(core.read_model(d["xml"]), test, None)
        with open(ref_path, "wb") as f:
            pickle.dump((refs, f32_ms), f)
    print(f"f32 IR: {f32_ms:.0f} ms alone", flush=True)
    f32 = core.compile_model(static(core.read_model(d["xml"]), test[0]), "CPU", CONFIG)
    f32(test[0])
    for name in names:
        model = core.read_model(d["xml"])
        t = time.time()
        q = recipe(name, model, calib, test, refs)
        qt = time.time() - t
        if name.startswith("f32"):
            qt = 0.0
        rel, ms, _, f32_ms = evaluate(q, test, refs, f32)
        line = (f"| {name} | {rel:.2e} | {REL999:.2e} | {ms:.0f} | {f32_ms:.0f} | "
                f"{f32_ms / ms:.2f}x | {qt:.0f} s | {os.getloadavg()[0]:.1f} |")
        print(line, flush=True)
        with open(WORK / "results.md", "a") as f:
            f.write(line + "\n")
        if "aac" in name:
            tag = name.replace(":", "_").replace("=", "-")
            ov.save_model(q, WORK / f"{tag}.xml")
            floats = float_layers(q)
            (WORK / f"{tag}.float.txt").write_text("\n".join(floats) + "\n")
            print(f"    {len(floats)} conv/matmul layers with weights left in float", flush=True)




CATEGORIES = {
    "qkv": lambda n: any(k in n for k in (".to_q", ".to_k", ".to_v")),
    "ff_in": lambda n: ".ff.net.0" in n,
    "ff_out": lambda n: ".ff.net.2" in n,
    "proj_in": lambda n: ".proj_in" in n,
    "proj_out": lambda n: ".proj_out" in n,
    "temb": lambda n: "time_emb" in n,
    "res_conv1": lambda n: ".resnets." in n and ".conv1" in n,
    "res_conv2": lambda n: ".resnets." in n and ".conv2" in n,
    "samplers": lambda n: "samplers." in n,
    "down": lambda n: "down_blocks." in n,
    "mid": lambda n: "mid_block." in n,
    "up": lambda n: "up_blocks." in n,
    "up_res_conv1": lambda n: "up_blocks." in n and ".resnets." in n and ".conv1" in n,
    "up_res_conv2": lambda n: "up_blocks." in n and ".resnets." in n and ".conv2" in n,
    "down_res": lambda n: ("down_blocks." in n or "mid_block." in n) and ".resnets." in n,
}


def float_weights(f32m: ov.Model) -> dict[str, np.ndarray]:
    """The f32 IR's weights of its Convolution/MatMul layers (Constant, maybe via Convert)."""
    out = {}
    for op in f32m.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "MatMul"):
            continue
        node = op.input_value(1).get_node()
        if node.get_type_name() == "Convert":
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant":
            out[op.get_friendly_name()] = node.get_data().astype(np.float32)
    return out


def bypass(model: ov.Model, match, weights: dict[str, np.ndarray]) -> tuple[ov.Model, int]:
    """A clone of the quantized `model` with the Convolution/MatMul layers whose names match
    back in float: their activation FakeQuantize bypassed, their int8 weights replaced by
    the f32 IR's."""
    import openvino.opset13 as ops
    model = model.clone()
    count = 0
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if op.get_type_name() not in ("Convolution", "MatMul") or not match(name):
            continue
        src = op.input_value(0).get_node()
        if src.get_type_name() == "FakeQuantize":
            op.input(0).replace_source_output(src.input_value(0))
            count += 1
        if name in weights:
            op.input(1).replace_source_output(ops.constant(weights[name]).output(0))
    model.validate_nodes_and_infer_types()
    return model, count


def screen(name: str, cats: list[str]) -> None:
    """Quantize once with recipe `name`, then for each category put its layers back in float
    by bypassing their FakeQuantize (no new calibration): error on the 8 validation inputs
    (recorded draws after the calibration ones, not the held-out test) and ms."""
    import nncf
    warnings.simplefilter("ignore")
    nncf.set_log_level(logging.ERROR)
    d = load()
    calib, test = d["calib"], d["test"]
    val = calib[17:25]
    f32m = core.read_model(d["xml"])
    f32 = core.compile_model(static(f32m, val[0]), "CPU", CONFIG)
    refs = [np.asarray(f32(x)[0]).copy() for x in val]
    weights = float_weights(f32m)
    q = recipe(name, core.read_model(d["xml"]), calib, test, [])
    types = {}
    for op in q.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            t = op.input_value(1).get_node().get_type_name()
            types[t] = types.get(t, 0) + 1
    print("weight input types:", types, flush=True)
    for cat in ["none", *cats]:
        kinds = [] if cat == "none" else cat.split("+")

        def match(n: str, kinds: list[str] = kinds) -> bool:
            return any(CATEGORIES[k](n) for k in kinds)
        m, count = bypass(q, match, weights)
        compiled = core.compile_model(static(m, val[0]), "CPU", CONFIG)
        outs = [np.asarray(compiled(x)[0]) for x in val]
        rel = (sum(float(np.sum((y - r) ** 2)) for y, r in zip(outs, refs, strict=False))
               / sum(float(np.sum(r ** 2)) for r in refs)) ** 0.5
        hi = [(y, r) for x, y, r in zip(val, outs, refs, strict=False)
              if float(x["timestep"][0]) > 900]
        rel999 = (sum(float(np.sum((y - r) ** 2)) for y, r in hi)
                  / sum(float(np.sum(r ** 2)) for _, r in hi)) ** 0.5
        ts, fs = [], []
        for _ in range(3):
            t = time.perf_counter()
            compiled(val[0])
            ts.append(time.perf_counter() - t)
            t = time.perf_counter()
            f32(val[0])
            fs.append(time.perf_counter() - t)
        ms, f32_ms = statistics.median(ts) * 1000, statistics.median(fs) * 1000
        line = (f"| {name} | {cat} | {count} | {rel:.2e} | {rel999:.2e} | {ms:.0f} | {f32_ms:.0f} |"
                f" {f32_ms / ms:.2f}x |")
        print(line, flush=True)
        with open(WORK / "screen.md", "a") as f:
            f.write(line + "\n")
        del compiled


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare()
    elif sys.argv[1] == "screen":
        screen(sys.argv[2], sys.argv[3:])
    else:
        run(sys.argv[2:])
