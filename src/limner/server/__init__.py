"""HTTP: the FastAPI app, auth, error rendering, SSE framing and routes."""
