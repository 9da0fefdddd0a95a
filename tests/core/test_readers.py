"""Pixel decoding: every PNG and JPEG mode a user's images come in becomes the uint8 the models read, unclipped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.data.readers import DatasetError, ReadLimits, decode_image, read_records


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["16-bit PNG", "32-bit integer TIFF"])
def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(kind: str) -> None:
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)  # scans, microscopy
    image = Image.fromarray(ramp) if kind == "16-bit PNG" else Image.fromarray(ramp.astype(np.int32), mode="I")
    decoded = decode_image(encoded(image, "PNG" if kind == "16-bit PNG" else "TIFF"), ReadLimits(), "test")
    assert decoded.shape == (64, 64, 1) and decoded.dtype == np.uint8
    assert np.abs(decoded[:, :, 0].astype(int) - ramp / 257.0).max() <= 0.5  # before: every value above 255 was 255


@pytest.mark.parametrize(
    ("mode", "fill", "channels"),
    [
        ("L", 77, 1),
        ("LA", (77, 128), 1),
        ("1", 1, 1),
        ("RGB", (10, 20, 30), 3),
        ("RGBA", (10, 20, 30, 0), 3),
        ("P", None, 3),
    ],  # fmt: skip
)
def test_each_mode_becomes_grey_or_colour_uint8(mode: str, fill, channels: int) -> None:  # noqa: ANN001
    image = (
        Image.new("RGB", (8, 8), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
        if mode == "P"
        else Image.new(mode, (8, 8), fill)
    )
    decoded = decode_image(encoded(image), ReadLimits(), "test")
    assert decoded.shape == (8, 8, channels) and decoded.dtype == np.uint8
    expected = {"L": 77, "LA": 77, "1": 255}.get(mode, (10, 20, 30))
    assert (decoded == np.asarray(expected, dtype=np.uint8)).all(), (mode, decoded[0, 0])


def test_cmyk_jpeg_becomes_colour() -> None:
    decoded = decode_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), ReadLimits(), "test")
    assert decoded.shape == (8, 8, 3) and decoded[0, 0, 0] > 200 and decoded[0, 0, 1:].max() < 60  # red


def test_16_bit_npz_images_are_scaled_as_16_bit_pngs_are(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "images.npz"
    np.savez(path, images=np.full((2, 4, 4), 40000, dtype=np.uint16))
    records = read_records(path, "image", "npz", ReadLimits())
    assert records.images.dtype == np.uint8 and (records.images == round(40000 / 257)).all()  # before: clipped to 255


def test_whole_float_labels_are_the_integers_classes_in_numeric_order(tmp_path) -> None:  # noqa: ANN001
    table = np.column_stack([np.arange(8.0).reshape(4, 2), [10, 2, 10, 2]])  # the labels become 10.0 and 2.0
    path = tmp_path / "v.csv"
    np.savetxt(path, table, delimiter=",", header="a,b,label", comments="")
    records = read_records(path, "vectors", "csv", ReadLimits())
    assert records.label_names == ["2", "10"] and records.labels.tolist() == [1, 0, 1, 0]  # before: "10.0" < "2.0"
    lines = [f'{{"text": "t{i}", "label": {label}}}' for i, label in enumerate([2, 10.0, 2.0, 10, 2.5])]
    (tmp_path / "t.jsonl").write_text("\n".join(lines))
    records = read_records(tmp_path / "t.jsonl", "text", "jsonl", ReadLimits())
    assert records.label_names == ["2", "2.5", "10"] and records.labels.tolist() == [0, 2, 0, 2, 1]  # 2 and 2.0: one
    named = [f'{{"text": "t{i}", "label": "{label}"}}' for i, label in enumerate(["b", "a", "10", "2"])]
    (tmp_path / "n.jsonl").write_text("\n".join(named))
    assert read_records(tmp_path / "n.jsonl", "text", "jsonl", ReadLimits()).label_names == ["10", "2", "a", "b"]


@pytest.mark.parametrize("fmt", ["text csv", "vectors csv", "vectors parquet"])
def test_an_empty_label_cell_is_a_missing_label_in_every_format(tmp_path, fmt: str) -> None:  # noqa: ANN001
    """A spreadsheet's blank label cell is no label: beside labelled rows it is refused, not a class named ''."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = ["a", "", "b", "a"]
    modality, suffix = fmt.split()
    path = tmp_path / f"data.{suffix}"
    if fmt == "text csv":
        path.write_text("text,label\n" + "".join(f"t{i},{label}\n" for i, label in enumerate(labels)))
    elif fmt == "vectors csv":
        path.write_text("x,y,label\n" + "".join(f"{i},1.5,{label}\n" for i, label in enumerate(labels)))
    else:
        pq.write_table(pa.table({"x": [0.5, 1.0, 2.0, 3.0], "label": labels}), path)
    with pytest.raises(DatasetError, match="some records have a label and some do not"):
        read_records(path, modality, suffix, ReadLimits())
