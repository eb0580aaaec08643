"""Public helpers for testing code that uses taskqueue: an in-memory repository and more."""

from __future__ import annotations

from taskqueue_core.memory import InMemoryRepository

__all__ = ["InMemoryRepository"]
