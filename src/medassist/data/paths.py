"""Where data files live: one data directory, chosen by argument, environment, or the user cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_DIR_ENV = "MEDASSIST_DATA_DIR"
CACHE_ENV = "MEDASSIST_CACHE_DIR"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory as an absolute path.

    Args:
        data_dir: an explicit folder; wins over everything else.

    Returns:
        ``data_dir`` if given, else ``$MEDASSIST_DATA_DIR`` if set and non-empty, else the user cache folder
        (``platformdirs.user_cache_dir("medassist")``), with ``~`` expanded.
    """
    if data_dir is not None and str(data_dir) != "":
        chosen = str(data_dir)
    elif os.environ.get(DATA_DIR_ENV):
        chosen = os.environ[DATA_DIR_ENV]
    else:
        chosen = platformdirs.user_cache_dir("medassist")
    # absolute() rather than resolve(): keep the user's symlinks as given, so messages show the path they know.
    return Path(chosen).expanduser().absolute()


def cache_root() -> Path:
    """Where medassist keeps what it can compute again (decoded images, text embeddings): ``$MEDASSIST_CACHE_DIR``
    if set, else the per-user cache folder. Never the data directory, which may be read-only or shared."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("medassist")).expanduser().absolute()
