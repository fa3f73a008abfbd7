"""Helpers shared by the tests, the benchmarks and the training scripts, never by the server:
tiny random-weight diffusers pipelines built offline (`tiny_pipeline`) and the load check
(`load`)."""
