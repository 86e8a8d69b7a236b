"""Datasheets of the built-in data sets (source, licence, collection, demographics, known gaps, label noise),
shipped as YAML in ``data/datasheets/`` and rendered by ``medassist data info NAME``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medassist.errors import MedAssistError

SECTIONS = (
    ("source", "Source"),
    ("citation", "Citation"),
    ("licence", "Licence"),
    ("collection", "Collection"),
    ("demographics", "Demographics"),
    ("known_gaps", "Known gaps"),
    ("label_noise", "Label noise"),
)


def _folder() -> Path:
    return Path(str(resources.files("medassist") / "data" / "datasheets"))


def datasheet_names() -> list[str]:
    """The data sets with a datasheet; every MedMNIST v2 set shares the MedMNIST sheet."""
    from medassist.data.medmnist import INFO

    return sorted({p.stem for p in _folder().glob("*.yaml")} | set(INFO))


def load_datasheet(name: str) -> dict[str, Any]:
    """The datasheet of ``name`` (openi, padchest, or a MedMNIST set such as pneumoniamnist).

    Raises:
        MedAssistError: no datasheet of that name.
    """
    from medassist.data.medmnist import INFO

    key = name.lower()
    file = _folder() / f"{'medmnist' if key in INFO else key}.yaml"
    if not file.is_file():
        raise MedAssistError(f"no datasheet for '{name}'; datasheets: {', '.join(datasheet_names())}")
    sheet = yaml.safe_load(file.read_text(encoding="utf-8"))
    if key in INFO:
        sheet["set"] = key
        sheet["set_note"] = sheet.get("sets", {}).get(key, "")
    return sheet


def render_datasheet(sheet: dict[str, Any]) -> str:
    """The datasheet as Markdown."""
    title = sheet["title"] + (f": {sheet['set']}" if sheet.get("set") else "")
    out = [f"# {title}\n"]
    if sheet.get("set_note"):
        out.append(f"{sheet['set_note'].strip()}\n")
    for key, head in SECTIONS:
        value = sheet.get(key)
        if not value:
            continue
        out.append(f"## {head}\n")
        if isinstance(value, list):
            out.append("\n".join(f"- {v}" for v in value) + "\n")
        else:
            out.append(f"{str(value).strip()}\n")
    return "\n".join(out)
