"""Reports built from run folders (they read files only)."""

from __future__ import annotations

from medassist.report.image import build_image_report, write_image_report
from medassist.report.text import build_text_report, write_text_report

__all__ = ["build_image_report", "build_text_report", "write_image_report", "write_text_report"]
