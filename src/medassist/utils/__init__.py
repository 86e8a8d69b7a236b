"""Small shared helpers: atomic file writes (io), formatting (format), word counts (words) and the like."""

from __future__ import annotations

from medassist.utils.io import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]
