"""The OpenAI wire contract: pydantic and the standard library only, never torch."""
