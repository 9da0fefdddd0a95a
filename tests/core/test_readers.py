"""Pixel decoding: every PNG and JPEG mode a user's images come in becomes the uint8 the models read, unclipped."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.data.readers import ColumnError, Columns, DatasetError, ReadLimits, decode_image, image_shape, read_records


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


@pytest.mark.parametrize("channels", [1, 3])
def test_large_npz_images_are_shrunk_as_read_as_a_zips_are(tmp_path, channels: int) -> None:  # noqa: ANN001
    """An NPZ's images over ``max_image_side`` are shrunk as they are read, pixel for pixel as the same images in a
    ZIP are. Before, they were kept whole: 3,000 scans of 2048x2048 held 12.6 GB for the whole job."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 600, 800, channels), dtype=np.uint8).squeeze(-1 if channels == 1 else ())
    np.savez(tmp_path / "big.npz", images=images, labels=np.array([0, 1, 0]))
    with zipfile.ZipFile(tmp_path / "big.zip", "w") as archive:
        for index, image in enumerate(images):
            archive.writestr(f"c{index}/{index}.png", encoded(Image.fromarray(image), "PNG"))  # read in this order
    limits = ReadLimits(max_image_side=512)
    from_npz = read_records(tmp_path / "big.npz", "image", "npz", limits).images
    from_zip = read_records(tmp_path / "big.zip", "image", "zip", limits).images
    assert from_npz.shape == (3, channels, 384, 512) and from_npz.dtype == np.uint8
    assert (from_npz == from_zip).all()
    small = read_records(tmp_path / "big.npz", "image", "npz", ReadLimits(max_image_side=800)).images
    assert (small.transpose(0, 2, 3, 1).reshape(images.shape) == images).all()  # within the side: as they are


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


def test_a_vectors_csv_without_a_header_keeps_its_first_row(tmp_path) -> None:  # noqa: ANN001
    """``np.savetxt`` and ``to_csv(header=False)`` write no header: the first row is data, not column names."""
    x = np.arange(15, dtype=np.float32).reshape(5, 3) / 7
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    records = read_records(tmp_path / "x.csv", "vectors", "csv", ReadLimits())
    assert len(records) == 5 and np.allclose(records.vectors, x)  # before: 4 records, the first one lost
    with pytest.raises(DatasetError, match=r"no header row .* no column is named 'label'"):
        read_records(tmp_path / "x.csv", "vectors", "csv", ReadLimits(), Columns(named=frozenset({"label"})))
    (tmp_path / "named.csv").write_text("0,1,2,label\n0.5,1,2,a\n0.25,3,4,b\n")  # pandas' default column names
    records = read_records(tmp_path / "named.csv", "vectors", "csv", ReadLimits())
    assert len(records) == 2 and records.label_names == ["a", "b"]
    (tmp_path / "spectra.csv").write_text("400,410,420\n0.5,0.25,0.75\n")  # whole numbers, each once: names
    spectra = read_records(tmp_path / "spectra.csv", "vectors", "csv", ReadLimits())
    assert spectra.vectors.tolist() == [[0.5, 0.25, 0.75]]
    (tmp_path / "spectra-labelled.csv").write_text("400,410,label\n0.5,0.25,a\n0.75,1,b\n")
    assert read_records(tmp_path / "spectra-labelled.csv", "vectors", "csv", ReadLimits()).label_names == ["a", "b"]
    (tmp_path / "counts.csv").write_text("0,0,5,13\n1,2,3,4\n")  # whole numbers repeated: a record, not names
    assert read_records(tmp_path / "counts.csv", "vectors", "csv", ReadLimits()).vectors.tolist() == [
        [0, 0, 5, 13], [1, 2, 3, 4]]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (",a,b\n0,0.5,1\n1,0.25,2\n", r"column 1 of the header has no name.*index=False"),  # pandas' to_csv() index
        ("0.5,0.1,cat\n0.25,0.2,dog\n", r"first row mixes numbers \(0.5, 0.1\) with names, as a record"),  # no header
    ],
)
def test_a_vectors_csv_whose_header_is_not_names_is_refused(tmp_path, text: str, problem: str) -> None:  # noqa: ANN001
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(DatasetError, match=problem):  # before: a row index as a feature, or the first row lost
        read_records(tmp_path / "x.csv", "vectors", "csv", ReadLimits())


def test_the_index_pandas_stores_in_parquet_is_not_a_feature(tmp_path) -> None:  # noqa: ANN001
    import pandas as pd  # the dev extra's: the file is what pandas writes

    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5, 3.5], "y": [1.0, 2.0, 3.0, 4.0], "label": list("abab")})
    kept = frame[frame.x != 1.5]  # a filtered frame: its index 0, 2, 3 is stored as a column
    kept.to_parquet(tmp_path / "v.parquet")
    records = read_records(tmp_path / "v.parquet", "vectors", "parquet", ReadLimits())
    assert records.vectors.tolist() == [[0.5, 1.0], [2.5, 3.0], [3.5, 4.0]]  # before: a third feature, 0, 2, 3
    assert records.label_names == ["a", "b"]
    kept.set_index("label").to_parquet(tmp_path / "named.parquet")  # a named index is a column of the user's
    records = read_records(tmp_path / "named.parquet", "vectors", "parquet", ReadLimits())
    assert records.vectors.tolist() == [[0.5, 1.0], [2.5, 3.0], [3.5, 4.0]] and records.label_names == ["a", "b"]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_spreadsheets_csv_with_decimal_commas_is_read_as_it_means(tmp_path, separator: str) -> None:  # noqa: ANN001
    """Where the decimal point is a comma, spreadsheets save "CSV" with ';' between fields (or tabs)."""
    rows = [["x", "y", "label"], ["1,5", "-2", "a"], ["0,25", "3,0", "b"]]
    (tmp_path / "v.csv").write_text("\r\n".join(separator.join(row) for row in rows) + "\r\n")
    records = read_records(tmp_path / "v.csv", "vectors", "csv", ReadLimits())
    assert records.vectors.tolist() == [[1.5, -2.0], [0.25, 3.0]] and records.label_names == ["a", "b"]  # before: one
    (tmp_path / "h.csv").write_text("1,5;2\n3;4,75\n")  # no header: the first row is data here too
    assert read_records(tmp_path / "h.csv", "vectors", "csv", ReadLimits()).vectors.tolist() == [[1.5, 2], [3, 4.75]]
    (tmp_path / "t.csv").write_text(f"text{separator}label\nhello, world{separator}a\nbye{separator}b\n")
    records = read_records(tmp_path / "t.csv", "text", "csv", ReadLimits())
    assert records.texts == ["hello, world", "bye"] and records.label_names == ["a", "b"]  # before: no column 'text'


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_text_columns_named_at_upload_are_read_as_texts_or_pairs(tmp_path, fmt: str) -> None:  # noqa: ANN001
    """Query and passage columns (as MS MARCO, Natural Questions and most retrieval sets name them) are read as pairs
    where the upload names them. Before, a file without 'anchor' and 'positive' columns had to be rewritten."""
    import pandas as pd

    frame = pd.DataFrame({"query": ["q1", "q2"], "passage": ["p1", "p2"], "sentence": ["s1", "s2"],
                          "topic": ["a", "b"]})  # fmt: skip
    path = tmp_path / f"t.{fmt}"
    {"csv": lambda: frame.to_csv(path, index=False), "parquet": lambda: frame.to_parquet(path),
     "jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[fmt]()  # fmt: skip
    pairs = Columns(label="topic", anchor="query", positive="passage", named=frozenset({"label", "pairs"}))
    records = read_records(path, "text", fmt, ReadLimits(), pairs)
    assert records.texts == ["q1", "q2"] and records.positives == ["p1", "p2"] and records.label_names == ["a", "b"]
    texts = read_records(path, "text", fmt, ReadLimits(), Columns(text="sentence", named=frozenset({"text"})))
    assert texts.texts == ["s1", "s2"] and texts.positives is None and texts.labels is None
    with pytest.raises(DatasetError, match="no column 'text'"):  # unnamed: the default columns, as before
        read_records(path, "text", fmt, ReadLimits())
    misspelt = Columns(anchor="querry", positive="passage", named=frozenset({"pairs"}))
    with pytest.raises(ColumnError, match=r"no column 'querry' \(its columns: \['query', 'passage', 'sentence'"):
        read_records(path, "text", fmt, ReadLimits(), misspelt)


def test_a_named_text_column_read_as_texts_even_beside_anchor_and_positive_columns(tmp_path) -> None:
    """Named, the text column decides: a file with 'anchor' and 'positive' columns too is read as its texts."""
    (tmp_path / "t.csv").write_text("body,anchor,positive\nb1,a1,p1\n")
    records = read_records(
        tmp_path / "t.csv", "text", "csv", ReadLimits(), Columns(text="body", named=frozenset({"text"}))
    )
    assert records.texts == ["b1"] and records.positives is None
    (tmp_path / "t.txt").write_text("one line\n")
    with pytest.raises(ColumnError, match="no columns to name"):
        read_records(tmp_path / "t.txt", "text", "txt", ReadLimits(), Columns(text="body", named=frozenset({"text"})))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npy"])
def test_one_hot_columns_of_booleans_are_features_of_0_and_1(tmp_path, fmt: str) -> None:  # noqa: ANN001
    """pandas' get_dummies makes bool columns (True/False in a CSV); before, "not numeric (bool)"."""
    import pandas as pd

    frame = pd.DataFrame({"size": [1.5, 2.0, 3.0], "colour": ["red", "blue", "red"], "label": ["a", "b", "a"]})
    encoded = pd.get_dummies(frame, columns=["colour"])  # colour_blue, colour_red: bool
    path = tmp_path / f"v.{fmt}"
    if fmt == "csv":
        encoded.to_csv(path, index=False)
    elif fmt == "parquet":
        encoded.to_parquet(path)
    else:
        np.save(path, encoded[["colour_blue", "colour_red"]].to_numpy())
    records = read_records(path, "vectors", fmt, ReadLimits())
    expected = [[0, 1], [1, 0], [0, 1]] if fmt == "npy" else [[1.5, 0, 1], [2.0, 1, 0], [3.0, 0, 1]]
    assert records.vectors.tolist() == expected


def test_large_images_are_shrunk_to_the_longest_side_with_their_aspect_as_they_are_read() -> None:
    """A phone's 12 MP photo was kept whole (36 MB decoded): 40 of them took 4.3 GB and 14 s to read, and a few
    hundred would fill a 24 GiB machine at upload. Image models see at most 512 pixels a side."""
    halves = np.zeros((3000, 4000, 3), dtype=np.uint8)
    halves[:, 2000:] = 255  # black left, white right: what the shrunk image must still show
    photo = decode_image(encoded(Image.fromarray(halves), "JPEG"), ReadLimits(), "photo")
    assert photo.shape == (384, 512, 3) and photo.dtype == np.uint8
    assert photo[:, :250].max() < 40 and photo[:, 262:].min() > 215
    portrait = decode_image(encoded(Image.new("RGB", (300, 900), (10, 200, 30))), ReadLimits(), "portrait")
    assert portrait.shape == (512, 171, 3) and (np.abs(portrait.astype(int) - (10, 200, 30)) <= 1).all()
    grey16 = Image.fromarray(np.full((1024, 2048), 40000, dtype=np.uint16))  # scaled to 8 bits, then shrunk
    scan = decode_image(encoded(grey16), ReadLimits(), "scan")
    assert scan.shape == (256, 512, 1) and (scan == round(40000 / 257)).all()
    small = decode_image(encoded(Image.fromarray(halves[:64, 1968:2032])), ReadLimits(max_image_side=64), "small")
    assert small.shape == (64, 64, 3) and (small[:, :32] == 0).all()  # at the bound: untouched
    assert decode_image(encoded(Image.fromarray(halves)), ReadLimits(max_image_side=100), "x").shape == (75, 100, 3)


def test_a_cameras_photo_is_bounded_by_what_it_decodes_to() -> None:
    """A 24 MP JPEG (6000x4000, as cameras and phones of 24 MP and more take them) decodes at 1/8 of its size, 0.4
    MP, under the 16.8 MP bound; before, the bound was on the stored size, so that it was refused. What would decode
    to more than the bound still is: a PNG of that size (no reduced decoding), a JPEG whose 1/8 is too large."""
    photo = np.zeros((4000, 6000, 3), dtype=np.uint8)
    photo[:, 3000:] = 255
    read = decode_image(encoded(Image.fromarray(photo), "JPEG"), ReadLimits(), "camera.jpg")
    assert read.shape == (341, 512, 3) and read[:, :240].max() < 40 and read[:, 272:].min() > 215
    with pytest.raises(DatasetError, match=r"camera.png: 6000x4000 is more than 16777216 pixels"):
        decode_image(encoded(Image.fromarray(photo)), ReadLimits(), "camera.png")
    odd = encoded(Image.new("RGB", (6001, 4001)), "JPEG")  # its 1/8 rounds up: 376,251 pixels
    with pytest.raises(DatasetError, match=r"odd.jpg: 6001x4001 \(decoded at 751x501\) is more than 376000 pixels"):
        decode_image(odd, ReadLimits(max_image_pixels=376_000), "odd.jpg")


def test_an_image_datasets_shapes_come_from_headers_as_decoding_gives_them() -> None:
    """The ZIP reader takes each image's shape from its header (image_shape) to size the dataset's array, then
    decodes each image into its place; the header's word must be what decoding gives, in every case that changes
    it: a JPEG decoded at a reduced scale, an EXIF quarter turn, 16-bit and 32-bit grey, palette, alpha."""
    turned = Image.new("RGB", (40, 30))
    exif = turned.getexif()
    exif[0x0112] = 6
    sideways = io.BytesIO()
    turned.save(sideways, format="JPEG", exif=exif.tobytes())
    cases = {
        "JPEG 4000x3000": encoded(Image.new("RGB", (4000, 3000)), "JPEG"),
        "JPEG 3001x1999 grey": encoded(Image.new("L", (3001, 1999)), "JPEG"),
        "EXIF 6": sideways.getvalue(),
        "PNG 700x20": encoded(Image.new("RGB", (700, 20))),
        "16-bit PNG": encoded(Image.fromarray(np.full((90, 600), 40000, dtype=np.uint16))),
        "32-bit TIFF": encoded(Image.fromarray(np.full((8, 9), 70000, dtype=np.int32)), "TIFF"),
        "palette GIF": encoded(Image.new("P", (33, 17)), "GIF"),
        "RGBA WebP": encoded(Image.new("RGBA", (1030, 513)), "WEBP"),
        "LA PNG": encoded(Image.new("LA", (5, 7))),
    }
    for name, data in cases.items():
        assert image_shape(data, ReadLimits(), name) == decode_image(data, ReadLimits(), name).shape, name


def test_an_image_zip_is_read_into_one_array_without_copies(tmp_path) -> None:  # noqa: ANN001
    """Before, the reader kept every decoded image in a list, stacked them and transposed the stack: three copies
    of the dataset at once (for 200 images of 384x512, 354 MB to read 118 MB). A sideways photo's EXIF turn counts
    in the common size, as decoding does."""
    import tracemalloc

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for index in range(40):
            pixels = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8).repeat(128, axis=0).repeat(128, axis=1)
            archive.writestr(f"c{index % 2}/{index}.png", encoded(Image.fromarray(pixels)))  # 384x512
    tracemalloc.start()
    try:
        records = read_records(tmp_path / "photos.zip", "image", "zip", ReadLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records.images.shape == (40, 3, 384, 512) and records.images.flags.c_contiguous
    assert peak < 1.3 * records.images.nbytes, peak / records.images.nbytes  # 3.0 before

    portrait = Image.new("RGB", (40, 30), (200, 10, 10))  # stored 40x30, shown 30x40
    exif = portrait.getexif()
    exif[0x0112] = 6
    with zipfile.ZipFile(tmp_path / "turned.zip", "w") as archive:
        for index in range(3):
            buffer = io.BytesIO()
            portrait.save(buffer, format="JPEG", exif=exif.tobytes())
            archive.writestr(f"a/{index}.jpg", buffer.getvalue())
        archive.writestr("b/landscape.png", encoded(Image.new("RGB", (40, 30))))
    turned = read_records(tmp_path / "turned.zip", "image", "zip", ReadLimits())
    assert turned.images.shape == (4, 3, 40, 30)  # the three upright portraits' size, the landscape cropped to it


def test_a_photo_stored_sideways_with_an_exif_orientation_is_read_upright() -> None:
    """Phones store a portrait's pixels sideways and tag the file with how to turn it (EXIF Orientation 6: a quarter
    turn clockwise), which every viewer applies; before, the model saw it lying on its side."""
    stored = np.zeros((30, 40, 3), dtype=np.uint8)
    stored[:, :8] = 255  # the left edge as stored: the top once turned
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    upright = decode_image(buffer.getvalue(), ReadLimits(), "portrait")
    assert upright.shape == (40, 30, 3)
    assert upright[:6].min() > 200 and upright[10:].max() < 60


def test_an_image_of_another_aspect_is_cropped_to_the_common_one_not_stretched(tmp_path) -> None:  # noqa: ANN001
    """Two 4:3 landscapes and a 3:4 portrait holding a disc: the portrait loses its top and bottom to a centred crop,
    and its disc stays round. Before, it was stretched to 4:3, the disc an ellipse 1.78 times as wide as high."""
    rows, cols = np.mgrid[0:64, 0:48]
    disc = ((rows - 32) ** 2 + (cols - 24) ** 2 <= 15**2).astype(np.uint8) * 255  # 48 wide, 64 high
    with zipfile.ZipFile(tmp_path / "mixed.zip", "w") as archive:
        for name, array in (("a/1.png", np.zeros((48, 64), np.uint8)), ("a/2.png", np.zeros((48, 64), np.uint8)),
                            ("b/portrait.png", disc)):  # fmt: skip
            archive.writestr(name, encoded(Image.fromarray(array)))
    records = read_records(tmp_path / "mixed.zip", "image", "zip", ReadLimits())
    assert records.images.shape == (3, 1, 48, 64)
    bright = np.argwhere(records.images[2, 0] > 127)
    high, wide = np.ptp(bright, axis=0) + 1
    assert abs(wide - high) <= 2 and 38 <= high <= 42, (wide, high)  # 31 pixels across, times 64 / 48
