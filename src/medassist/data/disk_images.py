"""Images that stay on disk: rows of a uint8 (N, C, H, W) ``.npy`` file, read when a batch asks for them.

A data set larger than memory is decoded once into such a file (:mod:`medassist.data.image_cache`); a split is a
:class:`DiskImages` over some of its rows, and training reads each batch's rows with ``pread``. Nothing is mapped
into the process, so its resident memory does not grow with the number of images it has seen (the operating
system's page cache keeps the recently read ones, and gives them back when memory is needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medassist.errors import DataError


def _read_into(fd: int, out: np.ndarray, at: int) -> int:
    """Read ``out.nbytes`` bytes at offset ``at`` into the contiguous array ``out``; the bytes read."""
    if hasattr(os, "preadv"):  # Linux, BSD, macOS 11+: straight into the array
        return os.preadv(fd, [memoryview(out).cast("B")], at)
    data = os.pread(fd, out.nbytes, at) if hasattr(os, "pread") else _seek_read(fd, out.nbytes, at)
    out.reshape(-1)[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return len(data)


def _seek_read(fd: int, n: int, at: int) -> bytes:
    os.lseek(fd, at, os.SEEK_SET)
    return os.read(fd, n)


def npy_layout(path: Path) -> tuple[tuple[int, ...], int]:
    """The shape and the header size (the first pixel's byte offset) of a uint8 C-ordered ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype != np.uint8 or fortran or len(shape) != 4:
        raise DataError(f"{path} is not a uint8 (N, C, H, W) image array in C order; delete it to rebuild it.")
    return tuple(int(s) for s in shape), offset


class DiskImages:
    """Some rows of a uint8 (N, C, H, W) ``.npy`` file, shaped like a NumPy array of those rows.

    Indexing with an integer reads one image (C, H, W); with a slice, an index array, a boolean mask or a tensor it
    gives another :class:`DiskImages` over those rows (nothing is read). :meth:`read` and ``np.asarray`` read pixels.
    """

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, path: str | os.PathLike[str], rows: np.ndarray | None = None) -> None:
        self.path = Path(path)
        full, self.offset = npy_layout(self.path)
        self.item_shape = full[1:]
        self.item_bytes = int(np.prod(self.item_shape))
        expected = self.offset + full[0] * self.item_bytes
        if self.path.stat().st_size != expected:
            raise DataError(
                f"{self.path} holds {self.path.stat().st_size} bytes, not the {expected} its header says; "
                "it was cut short: delete it and the images are decoded again."
            )
        self.rows = np.arange(full[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self._fd: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.item_shape)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.item_bytes

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"DiskImages({self.path.name}, shape={self.shape})"

    def __getitem__(self, key: Any) -> np.ndarray | DiskImages:
        if isinstance(key, tuple):  # rows first, then within the images: read, then index the pixels
            picked = self[key[0]]
            rest = key[1:]
            return picked.read()[(slice(None), *rest)] if isinstance(picked, DiskImages) else picked[rest]
        if isinstance(key, (int, np.integer)):
            return self.read(np.array([int(key)]))[0]
        if hasattr(key, "numpy"):  # a torch tensor of indices
            key = key.cpu().numpy()
        if isinstance(key, np.ndarray) and key.dtype == bool:
            key = np.flatnonzero(key)
        return self._view(self.rows[key])

    def _view(self, rows: np.ndarray) -> DiskImages:
        view = object.__new__(DiskImages)
        view.__dict__.update(self.__dict__)
        view.rows, view._fd = np.atleast_1d(rows), None
        return view

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:  # a file descriptor does not travel to another process
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # type: ignore[arg-type]

    def read(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The pixels of ``idx`` (positions in this view; all when None), in that order, as a new uint8 array.

        Each run of consecutive rows is one read, so a whole split in order costs a few system calls and a shuffled
        batch one per image.
        """
        rows = self.rows if idx is None else self.rows[np.asarray(idx, dtype=np.int64)]
        out = np.empty((len(rows), *self.item_shape), dtype=np.uint8)
        if len(rows) == 0:
            return out
        flat = out.reshape(len(rows), self.item_bytes)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(rows) != 1) + 1, [len(rows)]])
        fd = self._open()
        for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
            want = (b - a) * self.item_bytes
            at = self.offset + int(rows[a]) * self.item_bytes
            got = _read_into(fd, flat[a:b], at)
            if got != want:
                raise DataError(f"{self.path}: read {got} of {want} bytes at {at}; the file changed while in use.")
        return out

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd
