"""Real radiology report data sets, read offline from the files shipped inside the torchxrayvision package.

torchxrayvision 1.5.7 carries the Open-i report archive and the PadChest label table in its ``data`` folder. The
files are read directly; the package itself is never imported, because its import pulls in torchvision and more.

* :func:`load_openi`: 3,955 English chest X-ray reports from Indiana University (Open-i), multi-label MeSH findings.
* :func:`load_padchest`: ~108K stemmed Spanish chest X-ray reports from PadChest, multi-label findings, with a test
  split of physician-labelled reports only and no patient in two splits.

Both return a :class:`~medassist.data.text_types.TextData` and write nothing to disk. Each data set has its own
module (:mod:`medassist.data.openi`, :mod:`medassist.data.padchest`) and what they share is in
:mod:`medassist.data.report_common`; this module is their public face.
"""

from __future__ import annotations

from medassist.data.openi import OPENI_EXCLUDED, OPENI_FILE, OPENI_NO_INDEXING, load_openi, parse_sex_age
from medassist.data.padchest import PADCHEST_COLUMNS, PADCHEST_EXCLUDED, PADCHEST_FILE, PHYSICIAN, load_padchest
from medassist.data.report_common import XRV_VERSION, xrv_data_dir

__all__ = [
    "OPENI_EXCLUDED",
    "OPENI_FILE",
    "OPENI_NO_INDEXING",
    "PADCHEST_COLUMNS",
    "PADCHEST_EXCLUDED",
    "PADCHEST_FILE",
    "PHYSICIAN",
    "XRV_VERSION",
    "load_openi",
    "load_padchest",
    "parse_sex_age",
    "xrv_data_dir",
]
