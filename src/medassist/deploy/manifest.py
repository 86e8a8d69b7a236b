"""A bundle's manifest.json: the size and SHA-256 of every other file, written at export and checked at load.

The manifest guards against accidents (an incomplete copy, a truncated download, a file edited by hand), not against
an attacker, who could rewrite it as well. Problems are raised as :class:`BundleError` with a complete message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medassist.deploy.bundle_spec import MANIFEST_FILE, REEXPORT, BundleError, file_name_problem, is_count

MANIFEST_FORMAT = "medassist-manifest"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """The manifest's table of files (name -> {"sha256", "bytes"}) of the bundle folder ``path``, checked for form."""
    file = path / MANIFEST_FILE
    if not file.is_file():
        raise BundleError(
            f"{path} has no {MANIFEST_FILE}: it is not a medassist bundle, or an incomplete copy of one; copy the "
            f"whole folder again or {REEXPORT}"
        )
    where = f"bundle {path}: {MANIFEST_FILE}"
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{where} is not valid JSON ({err}); {REEXPORT}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise BundleError(f"{where} is not a medassist manifest (format {MANIFEST_FORMAT!r}); {REEXPORT}")
    if manifest.get("algorithm") != "sha256":
        raise BundleError(f"{where} uses checksum algorithm {manifest.get('algorithm')!r}, not sha256; {REEXPORT}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{where} has no 'files' table; {REEXPORT}")
    for name, entry in files.items():
        problem = file_name_problem(name)
        if problem is None and not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.match(entry["sha256"])
            and is_count(entry.get("bytes"))
        ):
            problem = "has no valid sha256 and bytes"
        if problem is not None:
            raise BundleError(f"{where}: the entry {name!r} {problem}; {REEXPORT}")
    return files


def verified_bytes(path: Path, name: str, entry: Mapping[str, Any]) -> bytes:
    """The bytes of ``path/name`` after checking them against the manifest (the same bytes are then used)."""
    file = path / name
    if not file.is_file():
        raise BundleError(
            f"bundle {path}: {name} is listed in {MANIFEST_FILE} but missing; copy the whole bundle folder again or "
            f"{REEXPORT}"
        )
    data = file.read_bytes()
    size, listed = len(data), entry["bytes"]
    if size < listed:
        raise BundleError(
            f"bundle {path}: {name} is truncated ({size} bytes, the manifest lists {listed}): an incomplete copy, or "
            f"edited after export; copy the bundle again or {REEXPORT}"
        )
    if size > listed:
        raise BundleError(
            f"bundle {path}: {name} has {size} bytes but the manifest lists {listed}: it was changed after export; "
            f"copy the bundle again or {REEXPORT}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise BundleError(
            f"bundle {path}: {name} does not match its SHA-256 in {MANIFEST_FILE} (found {digest[:12]}..., listed "
            f"{entry['sha256'][:12]}...): it was changed after export; copy the bundle again or {REEXPORT}"
        )
    return data


def write_manifest(folder: Path, names: Sequence[str]) -> None:
    """Write ``folder``/manifest.json listing the size and SHA-256 of each file ``names`` in ``folder``."""
    files = {}
    for name in names:
        file = folder / name
        digest = hashlib.sha256()
        with file.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        files[name] = {"sha256": digest.hexdigest(), "bytes": file.stat().st_size}
    write_json(folder / MANIFEST_FILE, {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files})


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON; NaN and infinities are refused, as JSON cannot hold them."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
