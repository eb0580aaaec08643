"""Runnable examples: ``python -m examples.app`` starts the FastAPI example on 127.0.0.1:8000."""
