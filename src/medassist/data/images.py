"""Read the user's own images (PNG, JPEG, DICOM) from a folder of class subfolders or from a CSV file.

Every reader returns an :class:`~medassist.data.types.ImageData` with uint8 images of shape (N, C, size, size) and
raises :class:`~medassist.errors.DataError` for anything the user can fix. Readers never write files.

The readers live by concern: one file in :mod:`medassist.data.image_file`, a folder in
:mod:`medassist.data.image_folder`, a CSV in :mod:`medassist.data.image_csv`, and what the last two share in
:mod:`medassist.data.image_set`. This module is their public face.
"""

from __future__ import annotations

from medassist.data.image_csv import read_image_csv
from medassist.data.image_file import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, load_image
from medassist.data.image_folder import read_image_folder

__all__ = ["DICOM_EXTENSIONS", "IMAGE_EXTENSIONS", "load_image", "read_image_csv", "read_image_folder"]
