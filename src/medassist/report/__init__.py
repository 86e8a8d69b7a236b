"""Reports built from run folders (they read files only), and the number formatting they share."""

from __future__ import annotations

from medassist.report.image import build_image_report, write_image_report
from medassist.report.text import build_text_report, write_text_report
from medassist.utils.format import (
    MAX_COLUMNS,
    MISSING,
    column_kind,
    fmt_bool,
    fmt_ci,
    fmt_delta,
    fmt_int,
    fmt_metric,
    fmt_number,
    fmt_percent,
    fmt_points,
    fmt_quantity,
    fmt_ratio,
    fmt_sci,
    fmt_seconds,
    fmt_text,
    fmt_value,
    fmt_value_ci,
    format_frame,
    readable_header,
    readable_table,
    split_columns,
)

__all__ = [
    "MAX_COLUMNS",
    "MISSING",
    "build_image_report",
    "build_text_report",
    "column_kind",
    "fmt_bool",
    "fmt_ci",
    "fmt_delta",
    "fmt_int",
    "fmt_metric",
    "fmt_number",
    "fmt_percent",
    "fmt_points",
    "fmt_quantity",
    "fmt_ratio",
    "fmt_sci",
    "fmt_seconds",
    "fmt_text",
    "fmt_value",
    "fmt_value_ci",
    "format_frame",
    "readable_header",
    "readable_table",
    "split_columns",
    "write_image_report",
    "write_text_report",
]
