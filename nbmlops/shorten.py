"""Cutting text to a length, visibly: one function for tags, tables and plot labels."""

from __future__ import annotations

__all__ = ["clip"]


def clip(text: str, width: int, marker: str = "…") -> str:
    """``text`` cut to ``width`` characters, ending in ``marker`` when it was longer (``"..."`` where only ASCII
    may go, such as an MLflow tag)."""
    return text if len(text) <= width else text[: max(0, width - len(marker))] + marker
