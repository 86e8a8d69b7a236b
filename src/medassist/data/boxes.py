"""Images with boxes for object detection: BCCD, Pascal VOC folders, COCO JSON, YOLO folders and CSVs of boxes.

Every reader turns its format into :class:`BoxRecord` rows (an image file, its boxes in pixels, their class
names, and the split or group the source gives), and :func:`assemble` checks them all the same way:

- an annotation naming an image that is not there, or a class outside the data's classes, stops the read with
  the file and the row;
- a box reaching outside its image is clipped to it and counted (``strict=True`` refuses it instead);
- a zero-area or inverted box (``x_max <= x_min`` or ``y_max <= y_min``) is listed and dropped;
- an image that cannot be decoded is refused with its path (the image readers' rules).

Boxes are ``x_min, y_min, x_max, y_max`` in pixels of the image as loaded (0-based, continuous: a box covering
pixel columns 0-9 is ``0, ..., 10, ...``), x to the right; they are scaled with the image when ``image_size``
resizes it. What was clipped or dropped is kept in :attr:`BoxSet.issues` for the report.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medassist.errors import DataError

SPLITS = ("train", "val", "test")
BCCD_CLASSES = ("RBC", "WBC", "Platelets")


@dataclass
class BoxRecord:
    """One image as a source describes it: its file, its boxes (pixels of the file, x_min, y_min, x_max, y_max),
    their class names, and the split and group the source gives (None when it gives none)."""

    path: Path
    boxes: list[list[float]]
    labels: list[str]
    where: str
    split: str | None = None
    group: str | None = None


@dataclass
class BoxSet:
    """Images and their boxes.

    Attributes:
        images: uint8 (C, H, W) arrays, each at its own size.
        boxes: per image, float32 (n, 4): x_min, y_min, x_max, y_max in pixels of that array.
        labels: per image, int64 (n,) indices into ``classes``.
        names: per image, its file name (unique in the set).
        classes: the class names.
        source: where the set comes from (format, path, options).
        split: per image, "train", "val" or "test" when the source gives a split, else None.
        groups: per image, the group a split must keep together (a patient), else None.
        issues: what the checks changed: clipped boxes, dropped boxes (listed), images without boxes.
    """

    images: list[np.ndarray]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str]
    classes: list[str]
    source: dict[str, Any]
    split: list[str] | None = None
    groups: list[str] | None = None
    issues: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images[0].shape[0])

    def subset(self, idx: np.ndarray | list[int]) -> BoxSet:
        idx = [int(i) for i in idx]
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return BoxSet(
            [self.images[i] for i in idx],
            [self.boxes[i] for i in idx],
            [self.labels[i] for i in idx],
            [self.names[i] for i in idx],
            self.classes,
            self.source,
            pick(self.split),
            pick(self.groups),
            self.issues,
        )

    def counts(self) -> np.ndarray:
        """(N, K) boxes per image and class."""
        out = np.zeros((len(self), self.num_classes), dtype=np.int64)
        for i, lab in enumerate(self.labels):
            np.add.at(out[i], lab, 1)
        return out


def _read_image(path: Path, where: str, channels: int) -> np.ndarray:
    from medassist.data.image_file import read_pixels
    from medassist.data.segmentation import to_channels

    if not path.is_file():
        raise DataError(f"{where} names the image {path}, which does not exist; fix the path or add the file")
    try:
        pixels = read_pixels(path)
    except DataError as exc:
        raise DataError(f"{exc} ({where})") from exc
    return np.ascontiguousarray(to_channels(pixels, channels))


def _scaled(image: np.ndarray, image_size: int) -> tuple[np.ndarray, float]:
    """The image with its longer side ``image_size`` (0: as it is), and the factor its boxes scale by."""
    h, w = image.shape[-2:]
    if image_size <= 0 or max(h, w) == image_size:
        return image, 1.0
    s = image_size / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    out = np.asarray(pil.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
    out = out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
    return np.ascontiguousarray(out), s


def assemble(
    records: list[BoxRecord],
    *,
    classes: list[str] | None,
    source: dict[str, Any],
    image_size: int = 0,
    channels: int = 3,
    strict: bool = False,
) -> BoxSet:
    """Read the images of ``records`` and check their boxes (see the module's rules).

    Args:
        records: one per image.
        classes: the data's classes in their order; None takes the names found, sorted.
        source: provenance recorded in the set.
        image_size: resize each image so that its longer side is this many pixels (0: native size).
        channels: 3 (RGB; grayscale repeated) or 1 (grayscale).
        strict: refuse a box that reaches outside its image instead of clipping it.
    """
    if not records:
        raise DataError(f"{source.get('path', 'the data')} lists no images")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    found = sorted({lab for r in records for lab in r.labels})
    if classes is None:
        classes = found
    unknown = [(r, lab) for r in records for lab in r.labels if lab not in classes]
    if unknown:
        r, lab = unknown[0]
        raise DataError(
            f"{r.where} has a box of class '{lab}', which is not one of the classes {', '.join(classes)} "
            f"({len(unknown)} such boxes); add it to the classes or remove those boxes"
        )
    names = [r.path.name for r in records]
    if len(set(names)) != len(names):
        names = [os.path.relpath(r.path, os.path.commonpath([str(x.path) for x in records])) for r in records]
    images, boxes, labels = [], [], []
    clipped, dropped, empty = 0, [], 0
    for r, name in zip(records, names, strict=True):
        image = _read_image(r.path, r.where, channels)
        h, w = image.shape[-2:]
        keep_b, keep_l = [], []
        for b, lab in zip(r.boxes, r.labels, strict=True):
            x0, y0, x1, y1 = (float(v) for v in b)
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                raise DataError(f"{r.where}: a box of class '{lab}' has a coordinate that is not a number: {b}")
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                if strict:
                    raise DataError(
                        f"{r.where}: the {lab} box {[x0, y0, x1, y1]} reaches outside the {w}x{h} image; fix it, "
                        "or leave out --strict-boxes to clip such boxes to the image"
                    )
                clipped += 1
                x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
                y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
            if x1 <= x0 or y1 <= y0:
                dropped.append({"image": name, "label": lab, "box": [x0, y0, x1, y1]})
                continue
            keep_b.append([x0, y0, x1, y1])
            keep_l.append(classes.index(lab))
        image, s = _scaled(image, image_size)
        empty += not keep_b
        images.append(image)
        boxes.append(np.asarray(keep_b, dtype=np.float32).reshape(-1, 4) * s)
        labels.append(np.asarray(keep_l, dtype=np.int64))
    shapes = {im.shape[0] for im in images}
    if len(shapes) > 1:  # pragma: no cover - _read_image converts every image
        raise DataError(f"images have different channel counts {sorted(shapes)}; pass --channels 1 or 3")
    split = [r.split for r in records]
    groups = [r.group for r in records]
    return BoxSet(
        images,
        boxes,
        labels,
        names,
        list(classes),
        {**source, "image_size": image_size, "channels": channels},
        split=None if any(s is None for s in split) else [str(s) for s in split],
        groups=None if any(g is None for g in groups) else [str(g) for g in groups],
        issues={"clipped": clipped, "dropped": dropped, "images_without_boxes": empty},
    )


def _xml_text(node: ET.Element, tag: str, where: str) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise DataError(f"{where} has no <{tag}>; is it a Pascal VOC annotation?")
    return found.text.strip()


def read_voc(root: str | os.PathLike[str]) -> list[BoxRecord]:
    """A Pascal VOC folder: ``Annotations/*.xml`` and ``JPEGImages/``, with ``ImageSets/Main/{train,val,test}.txt``
    as the split when present. VOC's 1-based inclusive pixel boxes become 0-based continuous ones (the devkit's
    convention: ``x_min - 1``)."""
    root = Path(root)
    ann = root / "Annotations"
    if not ann.is_dir():
        raise DataError(f"{root} has no Annotations/ folder; a Pascal VOC folder holds Annotations/ and JPEGImages/")
    files = sorted(ann.glob("*.xml"))
    if not files:
        raise DataError(f"{ann} holds no .xml annotation")
    split_of: dict[str, str] = {}
    for s in SPLITS:
        listed = root / "ImageSets" / "Main" / f"{s}.txt"
        if listed.is_file():
            for stem in listed.read_text().split():
                split_of[stem] = s
    records = []
    for f in files:
        where = str(f)
        try:
            xml = ET.parse(f).getroot()  # noqa: S314 - the user's own annotation files
        except ET.ParseError as exc:
            raise DataError(f"{f} is not readable XML ({exc}); fix or remove it") from exc
        filename = xml.findtext("filename") or f"{f.stem}.jpg"
        image = root / "JPEGImages" / filename.strip()
        if not image.suffix:
            image = image.with_suffix(".jpg")
        boxes, labels = [], []
        for obj in xml.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                raise DataError(f"{where}: an <object> has no <bndbox>")
            x0, y0, x1, y1 = (float(_xml_text(bb, k, where)) for k in ("xmin", "ymin", "xmax", "ymax"))
            # 1-based inclusive pixels; a point or an inverted box stays as it is, for assemble to drop
            boxes.append([x0 - 1, y0 - 1, x1, y1] if x1 >= x0 + 1 and y1 >= y0 + 1 else [x0, y0, x1, y1])
            labels.append(_xml_text(obj, "name", where))
        records.append(BoxRecord(image, boxes, labels, where, split_of.get(f.stem) if split_of else None))
    if split_of and any(r.split is None for r in records):
        missing = [r.path.name for r in records if r.split is None]
        raise DataError(
            f"{len(missing)} annotated images of {root} are in none of ImageSets/Main/train, val, test.txt "
            f"(first: {missing[0]}); list them, or remove ImageSets/ to get a seeded split"
        )
    return records


def read_coco(file: str | os.PathLike[str], images: str | os.PathLike[str]) -> tuple[list[BoxRecord], list[str]]:
    """A COCO JSON file (``images``, ``annotations`` with ``bbox`` = x, y, width, height, ``categories``) and the
    folder its ``file_name`` entries are relative to. Returns the records and the class names in category order."""
    file, folder = Path(file), Path(images)
    try:
        coco = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{file} is not a readable COCO JSON file ({exc})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(f"{file} has no '{key}' list; a COCO detection file has images, annotations, categories")
    cats = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    ims = {int(im["id"]): im for im in coco["images"]}
    per: dict[int, BoxRecord] = {
        i: BoxRecord(folder / im["file_name"], [], [], f"{file} image id {i}") for i, im in ims.items()
    }
    for n, a in enumerate(coco["annotations"]):
        where = f"{file} annotation {n} (id {a.get('id', '?')})"
        if int(a.get("image_id", -1)) not in per:
            raise DataError(f"{where} names image id {a.get('image_id')}, which is not in the file's images")
        if int(a.get("category_id", -1)) not in cats:
            raise DataError(
                f"{where} has category id {a.get('category_id')}, which is not one of the categories "
                f"{sorted(cats)}; add the category or remove the annotation"
            )
        if a.get("iscrowd", 0):
            continue  # crowd regions are not objects to count
        x, y, w, h = (float(v) for v in a["bbox"])
        rec = per[int(a["image_id"])]
        rec.boxes.append([x, y, x + w, y + h])
        rec.labels.append(cats[int(a["category_id"])])
    return list(per.values()), [cats[k] for k in sorted(cats)]


def read_box_csv(
    file: str | os.PathLike[str],
    *,
    path_column: str = "path",
    box_columns: tuple[str, str, str, str] = ("x_min", "y_min", "x_max", "y_max"),
    label_column: str = "label",
    split_column: str = "split",
    group_column: str = "",
) -> list[BoxRecord]:
    """A CSV with one row per box (paths relative to the CSV's folder); an image without boxes is one row with
    empty box and label columns. ``split_column`` is used when present, ``group_column`` keeps a group (a
    patient) in one split."""
    import pandas as pd

    file = Path(file)
    try:
        table = pd.read_csv(file, keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"{file} is not a readable CSV ({exc})") from exc
    needed = [path_column, *box_columns, label_column] + ([group_column] if group_column else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(
            f"{file} has no column {', '.join(repr(c) for c in missing)} (it has {', '.join(map(str, table.columns))});"
            " name the columns with --path-column, --box-columns and --label-column"
        )
    has_split = split_column in table.columns
    per: dict[str, BoxRecord] = {}
    for n, row in enumerate(table.itertuples(index=False), start=2):
        values = row._asdict() if hasattr(row, "_asdict") else dict(zip(table.columns, row, strict=True))
        rel = str(values[path_column])
        where = f"{file} row {n}"
        rec = per.get(rel)
        if rec is None:
            split = str(values[split_column]).strip().lower() if has_split else None
            if split is not None and split not in SPLITS:
                raise DataError(f"{where}: split '{split}' is not one of {', '.join(SPLITS)}")
            group = str(values[group_column]) if group_column else None
            rec = per[rel] = BoxRecord(file.parent / rel, [], [], where, split, group)
        coords = [values[c] for c in box_columns]
        blank = [pd.isna(v) or str(v).strip() == "" for v in coords]
        if all(blank):
            continue  # an image without boxes
        if any(blank) or pd.isna(values[label_column]):
            raise DataError(f"{where}: a box needs all of {', '.join(box_columns)} and {label_column}")
        try:
            rec.boxes.append([float(v) for v in coords])
        except ValueError as exc:
            raise DataError(f"{where}: a box coordinate is not a number ({exc})") from exc
        rec.labels.append(str(values[label_column]))
    return list(per.values())


def read_yolo(root: str | os.PathLike[str]) -> tuple[list[BoxRecord], list[str]]:
    """A YOLO folder with its ``data.yaml`` (``names``, and ``train``/``val``/``test`` image folders): each image's
    ``labels/<stem>.txt`` (the ``images`` part of its path replaced by ``labels``) holds ``class cx cy w h``
    rows, normalised to the image's size."""
    import yaml

    root = Path(root)
    spec_file = root / "data.yaml"
    if not spec_file.is_file():
        raise DataError(f"{root} has no data.yaml; a YOLO folder names its classes and image folders there")
    spec = yaml.safe_load(spec_file.read_text()) or {}
    names = spec.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise DataError(f"{spec_file} has no 'names' list of classes")
    base = root / str(spec.get("path", "") or "")
    records = []
    for s in SPLITS:
        if not spec.get(s):
            continue
        folder = base / str(spec[s])
        if not folder.is_dir():
            raise DataError(f"{spec_file} names the {s} folder {folder}, which does not exist")
        for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")):
            parts = list(image.parts)
            at = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
            label_file = (
                Path(*parts[:at], "labels", *parts[at + 1 :]).with_suffix(".txt")
                if at is not None
                else image.with_suffix(".txt")
            )
            rows = label_file.read_text().split("\n") if label_file.is_file() else []
            rec = BoxRecord(image, [], [], str(label_file), s)
            cells = [r.split() for r in rows if r.strip()]
            if cells:
                with Image.open(image) as im:
                    w, h = im.size
            for k, c in enumerate(cells, start=1):
                if len(c) < 5:
                    raise DataError(f"{label_file} line {k}: expected 'class cx cy w h', got {' '.join(c)!r}")
                cls = int(float(c[0]))
                if not 0 <= cls < len(names):
                    raise DataError(f"{label_file} line {k}: class {cls} is not one of 0-{len(names) - 1}")
                cx, cy, bw, bh = (float(v) for v in c[1:5])
                rec.boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
                rec.labels.append(str(names[cls]))
            records.append(rec)
    if not records:
        raise DataError(f"{spec_file} names no train, val or test folder with images")
    return records, [str(n) for n in names]


def split_by_group(n: int, groups: list[str] | None, *, val: float, test: float, seed: int) -> np.ndarray:
    """A seeded split of ``n`` images into train/val/test, keeping each group (or each image) in one split."""
    keys = groups if groups is not None else [str(i) for i in range(n)]
    unique = sorted(set(keys))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    n_test = int(round(test * len(unique)))
    n_val = int(round(val * len(unique)))
    which = {}
    for rank, k in enumerate(order):
        which[unique[k]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return np.asarray([which[k] for k in keys])
