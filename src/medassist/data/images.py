"""Read the user's own images (PNG, JPEG, DICOM) from a folder of class subfolders or from a CSV file.

Every reader returns an :class:`~medassist.data.types.ImageData` with uint8 images of shape (N, C, size, size) and
raises :class:`~medassist.errors.DataError` for anything the user can fix. The files are decoded once, in parallel,
into a per-user cache (:mod:`medassist.data.image_cache`) unless ``ImageFiles(cache=False)``; the images of a cached
data set stay on disk (:class:`~medassist.data.disk_images.DiskImages`) and are read batch by batch.

The readers live by concern: one file in :mod:`medassist.data.image_file`, a folder in
:mod:`medassist.data.image_folder`, a CSV in :mod:`medassist.data.image_csv`, and what the last two share in
:mod:`medassist.data.image_set`. This module is their public face.
"""

from __future__ import annotations

from medassist.data.disk_images import DiskImages
from medassist.data.image_csv import read_image_csv
from medassist.data.image_file import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, load_image
from medassist.data.image_folder import read_image_folder
from medassist.data.image_set import ImageFiles

__all__ = [
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "DiskImages",
    "ImageFiles",
    "load_image",
    "read_image_csv",
    "read_image_folder",
]
