"""The diffusers engine's speed-ups, one module each: the weight cache (bf16 copies), the
NHWC layout, oneDNN weight packing, fused blocks, the kernel check that guards those two,
and the OpenVINO backend."""
