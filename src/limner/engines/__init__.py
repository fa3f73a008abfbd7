"""Engines draw pictures. Nothing here knows about HTTP."""
