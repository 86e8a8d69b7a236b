"""The document a pipeline report is written into: figures and tables numbered in order, the written pieces with
their word counts, and what each deliverable of the brief is answered by; and the readers of a run folder's files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.utils.words import count_words

# The written pieces the brief asks for, with their lengths in words.
WORD_LIMITS = {
    "text": (150, 250),
    "image": (200, 300),
    "synth": (150, 200),
    "deploy": (100, 150),
    "ethics": (400, 600),
}


@dataclass
class Doc:
    """The report being written: numbers figures and tables in order, and remembers what each answers."""

    root: Path
    lines: list[str] = field(default_factory=list)
    n_figures: int = 0
    n_tables: int = 0
    deliverables: list[tuple[str, str]] = field(default_factory=list)  # (deliverable, "Figure 3")
    pieces: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> tuple[int, int, int, int, dict[str, str]]:
        return len(self.lines), self.n_figures, self.n_tables, len(self.deliverables), dict(self.pieces)

    def restore(self, saved: tuple[int, int, int, int, dict[str, str]]) -> None:
        """Undo what was added since :meth:`snapshot` (a part that failed half-way leaves nothing behind)."""
        n_lines, self.n_figures, self.n_tables, n_deliverables, self.pieces = saved
        del self.lines[n_lines:], self.deliverables[n_deliverables:]

    def figure(self, path: Path, caption: str, deliverable: str = "") -> str:
        """Add a figure (if its file exists); return its label, e.g. "Figure 3" (empty if absent)."""
        if not path.is_file():
            return ""
        self.n_figures += 1
        label = f"Figure {self.n_figures}"
        rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        self.lines += [
            f'<figure><img src="{rel}" alt="{label}"><figcaption>{label}. {caption}</figcaption></figure>',
            "",
        ]
        if deliverable:
            self.deliverables.append((deliverable, label))
        return label

    def table(self, markdown: str, caption: str, deliverable: str = "") -> str:
        """Add a table (Markdown) with its caption above; return its label, e.g. "Table 2"."""
        if not markdown.strip():
            return ""
        self.n_tables += 1
        label = f"Table {self.n_tables}"
        self.lines += [f'<p class="caption">{label}. {caption}</p>', "", markdown.strip(), ""]
        if deliverable:
            self.deliverables.append((deliverable, label))
        return label

    def text(self, *paragraphs: str) -> None:
        for p in paragraphs:
            if p:
                self.lines += [p, ""]

    def piece(self, key: str, text: str, refs: list[str], deliverable: str) -> None:
        """A written piece the brief asks for, its length stated, followed by the figures and tables it rests on."""
        self.pieces[key] = text
        low, high = WORD_LIMITS[key]
        shown = [r for r in refs if r]
        self.text(
            text,
            f"*({count_words(text)} words; brief: {low}-{high}." + (f" See {', '.join(shown)}.)*" if shown else ")*"),
        )
        self.deliverables.append((deliverable, f"the written piece of {key} ({count_words(text)} words)"))


def file_problem(err: Exception, run: Path) -> str:
    """What is wrong with a run folder, without a traceback: the missing file, or the error's type and key."""
    if isinstance(err, FileNotFoundError) and err.filename:
        try:
            return f"{Path(err.filename).relative_to(run)} is missing"
        except ValueError:
            return f"{err.filename} is missing"
    if isinstance(err, KeyError):
        return f"a file lacks the entry {err.args[0]!r}"
    return f"{type(err).__name__}: {str(err)[:200]}"


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def table_rows(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return df[[c for c in cols if c in df.columns]]
