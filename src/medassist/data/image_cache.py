"""Decode a folder's or a CSV's image files once, by every core, into a uint8 cache file that later runs open.

- **Parallel**: the files are cut into chunks that worker processes decode (:func:`~medassist.data.image_file.
  load_image`) and write straight into the cache file at their rows, so no pixels travel between processes.
- **Cached**: one ``.npy`` per data set and size in the per-user cache folder (``$MEDASSIST_CACHE_DIR`` or
  ``platformdirs.user_cache_dir("medassist")/images``), named by a hash of the ordered file list with each file's
  size and modification time, the size and the channels. A changed, added or removed file gives another name, so
  the cache is rebuilt; the older file of the same data set and size is then deleted. The file is written under a
  temporary name and renamed when complete, so an interrupted decode leaves nothing half-written.
- **Every bad file at once**: an unreadable file does not stop the decode; all of them are reported at the end
  with their reasons (:func:`check_bad_files`), and a study refuses to train until they are fixed or skipped.

A plain NumPy file read with ``pread`` (:class:`~medassist.data.disk_images.DiskImages`) rather than MONAI's
``PersistentDataset``: the decoded images are already the network's input (uint8 at the working size), so a batch
is a gather of rows, one system call per image, with no per-item file or unpickling; ``medassist bench data``
measures the start-up and the memory this gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medassist.data.disk_images import DiskImages, npy_layout
from medassist.data.image_file import load_image
from medassist.data.paths import cache_root
from medassist.errors import DataError
from medassist.utils.cores import usable_cores

FORMAT = 1  # bump when the decoding changes, so that older caches are not reused
MAX_LISTED = 50  # bad files named in an error message; the rest are counted
MIN_PARALLEL = 200  # fewer files decode in this process: starting workers would cost more than it saves


def cache_dir() -> Path:
    """Where decoded image caches live: ``images/`` in :func:`~medassist.data.paths.cache_root`."""
    return cache_root() / "images"


def default_workers() -> int:
    """Decoding processes: every core this process may use."""
    return usable_cores()


@dataclass
class Decoded:
    """Every file's pixels in the given order (a bad file's row is zeros) and what went wrong with which file.

    Attributes:
        images: uint8 (N, C, size, size): a :class:`DiskImages` over the cache file, or an array without a cache.
        bad: (position, reason) of every file that could not be read, in order.
        cache: the cache file, or None.
        from_cache: True when an earlier decode was reused.
        seconds: wall time of the decode or the opening.
        workers: processes that decoded (0 when read from the cache).
        mixed_channels: files per channel count, when the set mixed grayscale and colour files and was converted
            to the count most have; else None.
    """

    images: np.ndarray | DiskImages
    bad: list[tuple[int, str]] = field(default_factory=list)
    cache: Path | None = None
    from_cache: bool = False
    seconds: float = 0.0
    workers: int = 0
    mixed_channels: dict[int, int] | None = None


GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def file_channels(path: Path) -> int | None:
    """The channel count :func:`~medassist.data.image_file.load_image` keeps for a file (1 or 3), read from its
    header only; None when the header cannot be read (the decode then reports the file)."""
    from PIL import Image

    from medassist.data.image_file import is_dicom

    try:
        if is_dicom(path):
            import pydicom

            return 3 if int(pydicom.dcmread(path, stop_before_pixels=True).get("SamplesPerPixel", 1)) > 1 else 1
        with Image.open(path) as im:
            return 1 if im.mode in GRAYSCALE_MODES else 3
    except Exception:  # noqa: BLE001 - any unreadable header: the decode names the file and its reason
        return None


def majority_channels(paths: Sequence[Path]) -> tuple[int, dict[int, int]]:
    """The channel count most files have (3 on a tie) and the count of files of each."""
    counts: dict[int, int] = {}
    for p in paths:
        c = file_channels(p)
        if c is not None:
            counts[c] = counts.get(c, 0) + 1
    if not counts:
        return 1, counts
    return (3 if counts.get(3, 0) >= counts.get(1, 0) else 1), counts


def _fingerprint(paths: Sequence[Path], size: int, channels: int | None) -> str:
    h = hashlib.sha256(json.dumps([FORMAT, size, channels]).encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.absolute()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p.absolute()}\0missing\n".encode())
    return h.hexdigest()[:24]


def _slug(name: str, source: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "images"
    return f"{safe}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def decode_images(
    paths: Sequence[Path],
    *,
    size: int,
    channels: int | None,
    name: str,
    source: str,
    cache: bool = True,
    workers: int = 0,
    progress: bool = True,
    where: Sequence[str] | None = None,
) -> Decoded:
    """Decode ``paths`` to uint8 (N, C, size, size), from the cache when an identical decode exists.

    Args:
        paths: the image files, in the order of their rows.
        size: output height and width.
        channels: see :func:`~medassist.data.image_file.load_image`; None takes the first readable file's.
        name: the data set's name (the cache file's prefix).
        source: the folder or CSV the files come from (tells apart data sets of one name).
        cache: keep the decode in the cache folder and reuse it; False decodes into memory every time.
        workers: decoding processes (0: every core).
        progress: show a progress bar.
        where: per file, words that locate it for the user (e.g. "listed in x.csv row 5"), added to its reason.

    Raises:
        DataError: no file is readable, or files have different channel counts while ``channels`` is None.
    """
    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    workers = workers or default_workers()
    key = _fingerprint(paths, size, channels)
    folder = cache_dir()
    prefix = f"{_slug(name, source)}-{size}px-"
    final = folder / f"{prefix}{key}.npy"
    if cache and final.is_file() and final.with_suffix(".json").is_file():
        try:
            images = DiskImages(final)
            bad = [(int(i), str(r)) for i, r in json.loads(final.with_suffix(".json").read_text())["bad"]]
        except (DataError, ValueError, KeyError, OSError):
            final.unlink(missing_ok=True)  # a damaged cache is rebuilt
        else:
            return Decoded(images, bad, final, True, time.perf_counter() - t0, 0)

    if channels is None:  # no decode of the files as they are: read their headers (not on the cached path)
        majority, counts = majority_channels(paths)
        if len(counts) > 1:  # grayscale and colour files in one set: every image gets the channels most have
            print(
                f"{name}: {counts.get(1, 0)} grayscale and {counts.get(3, 0)} colour image files; every image is "
                f"converted to {'RGB' if majority == 3 else 'grayscale'} (the channels most files have; "
                "--channels 1 or 3 chooses)",
                file=sys.stderr,
                flush=True,
            )
            decoded = decode_images(
                paths,
                size=size,
                channels=majority,
                name=name,
                source=source,
                cache=cache,
                workers=workers,
                progress=progress,
                where=where,
            )
            return dataclasses.replace(decoded, mixed_channels=counts)

    n_channels, first_ok = _first_channels(paths, size, channels)
    shape = (len(paths), n_channels, size, size)
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial") if cache else None
    try:
        if partial is not None:
            folder.mkdir(parents=True, exist_ok=True)
            np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape).flush()
            target: Path | np.ndarray = partial
        else:
            target = np.zeros(shape, dtype=np.uint8)
        bad, mismatched, workers = _decode_all(paths, size, channels, n_channels, target, workers, progress, name)
        if mismatched is not None:
            i, c = mismatched
            raise DataError(
                f"images have different channel counts: {paths[first_ok]} has {n_channels} and {paths[i]} has {c}; "
                "pass --channels 1 (grayscale) or --channels 3 (RGB) to convert every image to one."
            )
        if where is not None:
            bad = [(i, f"{reason} ({where[i]})") for i, reason in bad]
        if partial is None:
            assert isinstance(target, np.ndarray)
            return Decoded(target, bad, None, False, time.perf_counter() - t0, workers)
        meta = {"bad": bad, "shape": list(shape), "source": source, "files": len(paths), "format": FORMAT}
        final.with_suffix(".json").write_text(json.dumps(meta))
        os.replace(partial, final)  # complete: only now does the cache exist under its name
        for old in folder.glob(f"{prefix}*"):  # one file per data set and size: an older decode goes
            if old.name not in (final.name, final.with_suffix(".json").name):
                old.unlink(missing_ok=True)
        return Decoded(DiskImages(final), bad, final, False, time.perf_counter() - t0, workers)
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


def _first_channels(paths: Sequence[Path], size: int, channels: int | None) -> tuple[int, int]:
    """The channel count of the output and the position of the first readable file that has it."""
    reasons = []
    for i, p in enumerate(paths):
        try:
            return int(load_image(p, size=size, channels=channels).shape[0]), i
        except DataError as e:
            reasons.append(str(e))
            if len(reasons) >= MAX_LISTED:
                break
    listed = "\n  ".join(reasons[:5])
    raise DataError(f"none of the first {len(reasons)} of {len(paths)} image files is readable:\n  {listed}")


def pool_context() -> multiprocessing.context.BaseContext:
    """How decoding workers start: forked (fast) unless this process has initialised CUDA, which a forked child
    cannot use or even inherit safely; then from a fork server, which starts clean."""
    torch = sys.modules.get("torch")
    cuda_live = torch is not None and torch.cuda.is_initialized()
    return multiprocessing.get_context("forkserver" if cuda_live else "fork")


def _chunks(n: int, workers: int) -> list[range]:
    step = int(min(256, max(8, n // (workers * 8) or 1)))
    return [range(a, min(n, a + step)) for a in range(0, n, step)]


def _decode_all(
    paths: Sequence[Path],
    size: int,
    channels: int | None,
    n_channels: int,
    target: Path | np.ndarray,
    workers: int,
    progress: bool,
    name: str,
) -> tuple[list[tuple[int, str]], tuple[int, int] | None, int]:
    """Decode every chunk (in worker processes when ``workers`` > 1 and there are enough files); the bad files, the
    first channel mismatch, and the processes that decoded."""
    bad: list[tuple[int, str]] = []
    mismatch: list[tuple[int, int]] = []
    to_file = isinstance(target, Path)
    offset = npy_layout(target)[1] if to_file else 0
    jobs = [
        (
            [str(paths[i]) for i in r],
            r.start,
            size,
            channels,
            n_channels,
            str(target) if to_file else None,
            offset,
        )
        for r in _chunks(len(paths), workers)
    ]
    bar = tqdm(total=len(paths), desc=f"Decoding {name}", unit="img", disable=not progress)

    def collect(result: tuple[int, list, list, np.ndarray | None], count: int) -> None:
        start, b, m, pixels = result
        bad.extend(b)
        mismatch.extend(m)
        if pixels is not None:
            assert isinstance(target, np.ndarray)
            target[start : start + len(pixels)] = pixels
        bar.update(count)

    try:
        if workers <= 1 or len(jobs) == 1 or len(paths) < MIN_PARALLEL:
            workers = 1
            for job in jobs:
                collect(decode_chunk(*job), len(job[0]))
        else:
            workers = min(workers, len(jobs))
            with ProcessPoolExecutor(max_workers=workers, mp_context=pool_context()) as pool:
                futures = {pool.submit(decode_chunk, *job): len(job[0]) for job in jobs}
                for fut in as_completed(futures):
                    collect(fut.result(), futures[fut])
    finally:
        bar.close()
    return sorted(bad), (min(mismatch) if mismatch else None), workers


def decode_chunk(
    paths: list[str],
    start: int,
    size: int,
    channels: int | None,
    n_channels: int,
    out: str | None,
    offset: int,
) -> tuple[int, list[tuple[int, str]], list[tuple[int, int]], np.ndarray | None]:
    """Decode the files of rows ``start, start + 1, ...``: into the cache file ``out`` (at ``offset``) when given,
    else returned. A worker process's whole job; a file that cannot be read is recorded, not raised."""
    pixels = np.zeros((len(paths), n_channels, size, size), dtype=np.uint8)
    bad, mismatch = [], []
    for j, p in enumerate(paths):
        try:
            image = load_image(p, size=size, channels=channels)
        except DataError as e:
            bad.append((start + j, str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's problem, reported with it
            bad.append((start + j, f"{p}: {type(e).__name__}: {e}"))
            continue
        if image.shape[0] != n_channels:
            mismatch.append((start + j, int(image.shape[0])))
            continue
        pixels[j] = image
    if out is None:
        return start, bad, mismatch, pixels
    fd = os.open(out, os.O_WRONLY)
    try:
        at = offset + start * pixels[0].nbytes
        os.pwrite(fd, pixels.tobytes(), at) if hasattr(os, "pwrite") else _seek_write(fd, pixels.tobytes(), at)
    finally:
        os.close(fd)
    return start, bad, mismatch, None


def _seek_write(fd: int, data: bytes, at: int) -> None:
    os.lseek(fd, at, os.SEEK_SET)
    os.write(fd, data)


def check_bad_files(bad: Sequence[tuple[int, str]], total: int, *, skip: bool) -> np.ndarray:
    """The positions to keep: all but the bad files when ``skip``; with bad files and no ``skip``, a
    :class:`DataError` that lists every one (up to :data:`MAX_LISTED`, then a count) and the two ways on."""
    positions = np.array([i for i, _ in bad], dtype=np.int64)
    if not bad or skip:
        return np.setdiff1d(np.arange(total), positions)
    listed = "\n  ".join(reason for _, reason in bad[:MAX_LISTED])
    more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    raise DataError(
        f"{len(bad)} of {total} image files cannot be read:\n  {listed}{more}\n"
        "Fix or remove them, or pass --skip-bad-files true to leave them out (the report counts them). "
        "The other images are decoded and cached, so the next run starts at once."
    )
