"""Markdown to a single self-contained HTML file (figures embedded as data URIs)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import markdown

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
line-height:1.5;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}code{background:#f6f6f6;padding:1px 4px}
@media print{table{display:table;overflow:visible}}
"""


def markdown_to_html(text: str, *, base_dir: Path, title: str) -> str:
    """Render ``text`` to HTML, embedding every local PNG referenced relative to ``base_dir``."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])

    def embed(match: re.Match[str]) -> str:
        src = match.group(1)
        path = base_dir / src
        if src.startswith(("http:", "https:", "data:")) or not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+)"', embed, body)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_report(run_dir: Path, markdown_text: str, *, title: str) -> Path:
    """Write ``report.md`` and a self-contained ``report.html`` into ``run_dir`` (atomically); return the Markdown
    path."""
    from medassist.utils.io import atomic_write_text

    atomic_write_text(run_dir / "report.md", markdown_text)
    atomic_write_text(run_dir / "report.html", markdown_to_html(markdown_text, base_dir=run_dir, title=title))
    return run_dir / "report.md"
