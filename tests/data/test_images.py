"""Tests for reading the user's own images: PNG, JPEG and DICOM files, folder layouts and CSV lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from helpers import save_dicom
from medassist.data.images import load_image, read_image_csv, read_image_folder
from medassist.errors import DataError

# ----------------------------------------------------------------------------------------------------------------
# Helpers that write tiny images
# ----------------------------------------------------------------------------------------------------------------


def save_png(path: Path, value: int = 128, *, mode: str = "L", side: int = 8) -> Path:
    """Write a small image of one colour (a gradient row makes resizing non-trivial)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = np.full((side, side), value, dtype=np.uint8)
    gray[0] = np.linspace(0, 255, side).astype(np.uint8)
    if mode == "L":
        image = Image.fromarray(gray)
    else:
        image = Image.fromarray(np.stack([gray, 255 - gray, gray // 2], axis=-1)).convert(mode)
    image.save(path)
    return path


def make_class_folder(root: Path, counts: dict[str, int], *, value_of: dict[str, int] | None = None) -> None:
    for cls, n in counts.items():
        for i in range(n):
            save_png(root / cls / f"{cls}_{i}.png", (value_of or {}).get(cls, 40 * i % 256))


# ----------------------------------------------------------------------------------------------------------------
# load_image: PNG / JPEG
# ----------------------------------------------------------------------------------------------------------------


def test_png_grayscale_keeps_one_channel_and_resizes(tmp_path: Path) -> None:
    path = save_png(tmp_path / "g.png", 100, side=16)
    out = load_image(path, size=4)
    assert out.shape == (1, 4, 4) and out.dtype == np.uint8
    assert out[0, -1, -1] == 100  # A flat region stays flat through bilinear resizing.
    assert load_image(path, size=4, channels=3).shape == (3, 4, 4)


def test_png_rgb_and_rgba_and_palette(tmp_path: Path) -> None:
    rgb = save_png(tmp_path / "c.png", 100, mode="RGB")
    out = load_image(rgb, size=8)
    assert out.shape == (3, 8, 8)
    assert tuple(out[:, -1, -1]) == (100, 155, 50)
    assert load_image(rgb, size=8, channels=1).shape == (1, 8, 8)
    assert load_image(save_png(tmp_path / "a.png", 100, mode="RGBA"), size=8).shape == (3, 8, 8)
    assert load_image(save_png(tmp_path / "p.png", 100, mode="P"), size=8).shape == (3, 8, 8)


def test_jpeg_rgb(tmp_path: Path) -> None:
    path = tmp_path / "photo.JPG"
    Image.fromarray(np.full((10, 12, 3), (200, 30, 90), dtype=np.uint8)).save(path, format="JPEG", quality=95)
    out = load_image(path, size=6)
    assert out.shape == (3, 6, 6)
    assert np.abs(out[:, 3, 3].astype(int) - [200, 30, 90]).max() <= 4  # JPEG is lossy.


def test_16bit_png_is_min_max_scaled(tmp_path: Path) -> None:
    path = tmp_path / "xray16.png"
    Image.fromarray(np.array([[0, 4095], [2048, 4095]], dtype=np.uint16)).save(path)
    out = load_image(path, size=2)
    assert out.tolist() == [[[0, 255], [128, 255]]]


# ----------------------------------------------------------------------------------------------------------------
# load_image: DICOM
# ----------------------------------------------------------------------------------------------------------------


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    stored = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    # Modality values are stored*2 - 100: [[-100, 100], [300, 500]]; window 100 +/- ~100 (first of two windows).
    path = save_dicom(
        tmp_path / "ct.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=[100, 1000],
        WindowWidth=[201, 5],
    )
    out = load_image(path, size=2)
    assert out.shape == (1, 2, 2)
    # DICOM linear window: ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clipped; x=100 -> 0.5025 -> 128.
    assert out[0].tolist() == [[0, 128], [255, 255]]


def test_dicom_without_window_uses_min_max_and_signed_pixels(tmp_path: Path) -> None:
    path = save_dicom(tmp_path / "img.dicom", np.array([[-1000, 0], [1000, 0]], dtype=np.int16))
    assert load_image(path, size=2)[0].tolist() == [[0, 128], [255, 128]]


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.array([[0, 10], [20, 30]], dtype=np.uint16)
    mono2 = load_image(save_dicom(tmp_path / "m2.dcm", pixels), size=2)
    mono1 = load_image(save_dicom(tmp_path / "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1"), size=2)
    assert mono2[0, 1, 1] == 255 and mono1[0, 1, 1] == 0  # The highest value becomes the darkest.
    assert mono1[0, 0, 0] == 255
    assert np.array_equal(mono1, 255 - mono2)


def test_dicom_found_by_magic_without_extension(tmp_path: Path) -> None:
    path = save_dicom(tmp_path / "IM0001", np.array([[0, 1], [2, 3]], dtype=np.uint16))
    out = load_image(path, size=2, channels=3)
    assert out.shape == (3, 2, 2) and out[0, 1, 1] == 255


def test_dicom_nan_pixels_raise_naming_the_file(tmp_path: Path) -> None:
    path = save_dicom(tmp_path / "float.dcm", np.array([[0.0, np.nan], [1.0, 2.0]], dtype=np.float32))
    assert np.isnan(pydicom.dcmread(path).pixel_array).any()  # The file really holds a NaN.
    with pytest.raises(DataError, match=r"float\.dcm.*NaN"):
        load_image(path, size=2)


# ----------------------------------------------------------------------------------------------------------------
# load_image: bad files
# ----------------------------------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(DataError, match="file not found: .*nope.png"):
        load_image(path, size=4)


def test_corrupt_png_is_not_a_readable_image(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="broken.png is not a readable PNG, JPEG or DICOM image"):
        load_image(path, size=4)
    bad_dicom = tmp_path / "broken.dcm"
    bad_dicom.write_bytes(b"not a dicom file at all")
    with pytest.raises(DataError, match="broken.dcm"):
        load_image(bad_dicom, size=4)


def test_bad_channels_value(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="channels"):
        load_image(save_png(tmp_path / "g.png"), size=4, channels=2)


# ----------------------------------------------------------------------------------------------------------------
# read_image_folder
# ----------------------------------------------------------------------------------------------------------------


def test_folder_random_split_is_stratified(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "data", {"normal": 10, "pneumonia": 10})
    (tmp_path / "data" / "normal" / "notes.txt").write_text("not an image")
    data = read_image_folder(tmp_path / "data", size=4, val_fraction=0.2, test_fraction=0.2, progress=False)
    assert data.name == "data"
    assert data.class_names == ["normal", "pneumonia"]
    assert data.n_channels == 1 and data.image_size == 4
    assert sum(len(s) for s in data.splits.values()) == 20
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 12, "val": 4, "test": 4}
    for split in data.splits.values():
        assert split.images.shape[1:] == (1, 4, 4) and split.images.dtype == np.uint8
        assert set(split.labels.tolist()) == {0, 1}
        assert list(split.metadata.columns) == ["path"] and len(split.metadata) == len(split)
        for path, label in zip(split.metadata["path"], split.labels, strict=True):
            assert Path(path).parent.name == data.class_names[label]
    again = read_image_folder(tmp_path / "data", size=4, val_fraction=0.2, test_fraction=0.2, progress=False)
    assert again.splits["test"].metadata["path"].tolist() == data.splits["test"].metadata["path"].tolist()


def test_folder_with_given_splits(tmp_path: Path) -> None:
    root = tmp_path / "given"
    make_class_folder(root / "train", {"a": 3, "b": 2})
    make_class_folder(root / "val", {"a": 1, "b": 1})
    make_class_folder(root / "test", {"a": 2, "b": 1})
    data = read_image_folder(root, size=6, channels=3, name="mine", progress=False)
    assert data.name == "mine" and data.class_names == ["a", "b"]
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 5, "val": 2, "test": 3}
    assert data.splits["train"].labels.tolist() == [0, 0, 0, 1, 1]
    assert data.splits["test"].images.shape == (3, 3, 6, 6)
    assert all("/test/" in p.replace("\\", "/") for p in data.splits["test"].metadata["path"])


def test_folder_given_split_with_no_samples(tmp_path: Path) -> None:
    root = tmp_path / "given"
    make_class_folder(root / "train", {"a": 2, "b": 2})
    make_class_folder(root / "test", {"a": 1, "b": 1})
    (root / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="'val' split has no samples"):
        read_image_folder(root, size=4, progress=False)


def test_folder_mixing_grayscale_and_colour_takes_the_channels_most_files_have(tmp_path: Path, capsys) -> None:
    """A public X-ray folder often mixes grayscale and RGB files: without --channels every image gets the channel
    count most files have (said on stderr and recorded in the data's info); --channels chooses."""
    root = tmp_path / "mixed"
    make_class_folder(root, {"a": 8, "b": 8})
    save_png(root / "b" / "zz_colour.png", 50, mode="RGB")
    data = read_image_folder(root, size=4, progress=False)
    assert data.n_channels == 1
    assert data.info["mixed_channels"] == {"grayscale": 16, "colour": 1, "converted_to": 1}
    assert "16 grayscale and 1 colour image files; every image is converted to grayscale" in capsys.readouterr().err
    assert read_image_folder(root, size=4, channels=3, progress=False).n_channels == 3
    for i in range(20):
        save_png(root / "a" / f"rgb_{i}.png", 60, mode="RGB")
    assert read_image_folder(root, size=4, progress=False).info["mixed_channels"]["converted_to"] == 3


def test_folder_too_few_images_to_stratify(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "tiny", {"a": 1, "b": 5})
    with pytest.raises(DataError, match="cannot split 6 images"):
        read_image_folder(tmp_path / "tiny", size=4, progress=False)


def test_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        read_image_folder(tmp_path / "absent", progress=False)


# ----------------------------------------------------------------------------------------------------------------
# read_image_csv
# ----------------------------------------------------------------------------------------------------------------


def write_csv(tmp_path: Path, rows: list[dict], *, n_images: int = 12) -> Path:
    for i in range(n_images):
        save_png(tmp_path / "imgs" / f"{i}.png", 20 * i)
    path = tmp_path / "list.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def given_split_rows() -> list[dict]:
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 4
    return [
        {
            "path": f"imgs/{i}.png",
            "label": "sick" if i % 2 else "healthy",
            "sex": "F" if i < 6 else "M",
            "age": 30 + i,
            "site": f"s{i % 3}",
            "split": splits[i],
        }
        for i in range(12)
    ]


def test_csv_with_splits_keeps_metadata(tmp_path: Path) -> None:
    csv = write_csv(tmp_path, given_split_rows())
    data = read_image_csv(csv, size=4, progress=False)
    assert data.name == "list" and data.class_names == ["healthy", "sick"]
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 6, "val": 2, "test": 4}
    test_meta = data.splits["test"].metadata
    assert list(test_meta.columns) == ["path", "sex", "age", "site"]
    assert test_meta["age"].tolist() == [38, 39, 40, 41]
    assert test_meta["path"].tolist() == [str(tmp_path / "imgs" / f"{i}.png") for i in range(8, 12)]
    assert data.splits["test"].labels.tolist() == [0, 1, 0, 1]
    assert data.splits["test"].images[0, 0, -1, -1] == 160  # Image 8 was written with value 20 * 8.


def test_csv_random_split_int_labels_and_class_names(tmp_path: Path) -> None:
    rows = [{"file": str(tmp_path / "imgs" / f"{i}.png"), "y": i % 2} for i in range(12)]
    csv = write_csv(tmp_path, rows)
    data = read_image_csv(csv, size=4, path_column="file", label_column="y", class_names=["no", "yes"], progress=False)
    assert data.class_names == ["no", "yes"]
    assert sum(len(s) for s in data.splits.values()) == 12
    for split in data.splits.values():
        assert set(split.labels.tolist()) == {0, 1}
        assert list(split.metadata.columns) == ["path"]


def test_csv_unknown_class(tmp_path: Path) -> None:
    rows = given_split_rows()
    rows[3]["label"] = "other"
    csv = write_csv(tmp_path, rows)
    with pytest.raises(DataError, match=r"unknown class 'other' in .*list\.csv row 5.*known classes: healthy, sick"):
        read_image_csv(csv, class_names=["healthy", "sick"], progress=False)


def test_csv_missing_column_lists_present_columns(tmp_path: Path) -> None:
    csv = write_csv(tmp_path, given_split_rows())
    with pytest.raises(DataError, match=r"no label column 'diagnosis'.*'path', 'label', 'sex', 'age', 'site', 'split'"):
        read_image_csv(csv, label_column="diagnosis", progress=False)


def test_csv_bad_cells(tmp_path: Path) -> None:
    rows = given_split_rows()
    rows[2]["label"] = None
    with pytest.raises(DataError, match="row 4 has an empty 'label' cell"):
        read_image_csv(write_csv(tmp_path, rows), progress=False)
    rows = given_split_rows()
    rows[0]["split"] = "holdout"
    with pytest.raises(DataError, match="split 'holdout'.*train, val, test"):
        read_image_csv(write_csv(tmp_path, rows), progress=False)


def test_csv_missing_image_names_path_and_row(tmp_path: Path) -> None:
    rows = given_split_rows()
    rows[1]["path"] = "imgs/gone.png"
    with pytest.raises(DataError, match=r"file not found: .*gone\.png.*row 3"):
        read_image_csv(write_csv(tmp_path, rows), progress=False)


def test_csv_split_with_no_samples(tmp_path: Path) -> None:
    rows = given_split_rows()
    for row in rows:
        row["split"] = "train" if row["split"] == "val" else row["split"]
    with pytest.raises(DataError, match="'val' split has no samples"):
        read_image_csv(write_csv(tmp_path, rows), progress=False)


def test_csv_one_class_train(tmp_path: Path) -> None:
    rows = given_split_rows()
    for row in rows:
        if row["split"] == "train":
            row["label"] = "healthy"
    with pytest.raises(DataError, match="'train' split has only one class \\('healthy'\\)"):
        read_image_csv(write_csv(tmp_path, rows), progress=False)


# ----------------------------------------------------------------------------------------------------------------
# Named CSV columns, through the reader and through the image study's options
# ----------------------------------------------------------------------------------------------------------------


def renamed_rows() -> list[dict]:
    """given_split_rows() with the file in "image_file" and the class in "diagnosis"."""
    return [
        {"image_file": row["path"], "diagnosis": row["label"], **{k: row[k] for k in ("sex", "split")}}
        for row in given_split_rows()
    ]


def test_csv_with_other_column_names_is_read_through_the_named_columns(tmp_path: Path) -> None:
    csv = write_csv(tmp_path, renamed_rows())
    data = read_image_csv(csv, size=4, path_column="image_file", label_column="diagnosis", progress=False)
    assert data.class_names == ["healthy", "sick"]
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 6, "val": 2, "test": 4}
    test = data.splits["test"]
    assert test.labels.tolist() == [0, 1, 0, 1]
    # The named columns are consumed: "path" holds the resolved file, the other columns stay as metadata.
    assert list(test.metadata.columns) == ["path", "sex"]
    assert test.metadata["path"].tolist() == [str(tmp_path / "imgs" / f"{i}.png") for i in range(8, 12)]
    assert test.images[0, 0, -1, -1] == 160  # Image 8 was written with value 20 * 8.


@pytest.mark.parametrize(
    ("columns", "role", "missing"),
    [
        ({}, "path", "path"),  # the defaults, on a file whose columns are named otherwise
        ({"path_column": "file"}, "path", "file"),
        ({"path_column": "image_file", "label_column": "class"}, "label", "class"),
    ],
    ids=["default names", "wrong path column", "wrong label column"],
)
def test_csv_wrong_column_lists_the_columns_present(tmp_path: Path, columns: dict, role: str, missing: str) -> None:
    csv = write_csv(tmp_path, renamed_rows())
    present = r"columns present: 'image_file', 'diagnosis', 'sex', 'split'"
    with pytest.raises(DataError, match=rf"list\.csv has no {role} column '{missing}'; {present}\. .*--{role}-column"):
        read_image_csv(csv, progress=False, **columns)


def test_image_study_options_name_the_csv_columns(tmp_path: Path, capsys) -> None:
    from medassist.cli import main
    from medassist.studies.image import ImageStudyConfig, load_data

    csv = write_csv(tmp_path, renamed_rows())
    cfg = ImageStudyConfig(images=str(csv), image_size=4, progress=False, path_column="image_file")
    with pytest.raises(DataError, match=r"no label column 'label'; columns present: 'image_file', 'diagnosis'"):
        load_data(cfg)
    cfg.label_column = "diagnosis"
    data = load_data(cfg)
    assert data.class_names == ["healthy", "sick"] and len(data.splits["test"]) == 4

    argv = ["image", "--images", str(csv), "--path-column", "image_file", "--label-column", "diagnosis"]
    assert main([*argv, "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "path_column: image_file\n" in out and "label_column: diagnosis\n" in out
