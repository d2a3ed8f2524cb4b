"""Integrations with web frameworks: Django, Flask, FastAPI (each an optional extra)."""
