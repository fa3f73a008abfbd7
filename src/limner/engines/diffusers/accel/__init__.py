"""The diffusers engine's speed-ups, one module each. `layout` (NHWC), `prepack` (weights
packed once for oneDNN), `fusion` (elementwise work inside the packed calls) and `compile`
(torch.compile) each have an `apply` that changes a pipeline's modules in place and returns
what it did; `openvino` swaps components for OpenVINO-compiled ones (`OpenVINORuntime`),
`weight_cache` reads, converts and saves copies of the weights in the engine's dtype, and
`kernel_check` decides whether packing and fusion may run on this CPU. Which of them runs is
settled by `options.resolve` and carried out, in order, by `engine.load`.
"""
