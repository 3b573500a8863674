"""Persistence: sqlmodel tables (``tables``) and the batched, crash-safe writer (``store``)."""

from tinymlaas.store.store import Store

__all__ = ["Store"]
