"""Dataset uploads: every format accepted, every kind of bad file refused with a 4xx naming the problem."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy import update

from core.store.db import transaction
from core.store.tables import Dataset
from tests.conftest import digits_npz


def png(value: int, size: int = 8, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_file(value: int, fmt: str) -> bytes:
    """An 8x8 colour image in Pillow's format ``fmt`` (WEBP, AVIF, BMP, GIF, TIFF, ...)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 0, 0)).save(buffer, format=fmt)
    return buffer.getvalue()


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz(**arrays) -> bytes:  # noqa: ANN003
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def post(client, auth, modality: str, name: str, content: bytes, **data):
    return client.post("/v1/datasets", headers=auth, data={"modality": modality, **data},
                       files={"file": (name, content)})  # fmt: skip


GOOD = [
    ("text", "t.jsonl", b'{"text": "a cat", "label": "x"}\n{"text": "a dog", "label": "y"}\n', 2, 2),
    ("text", "t.csv", b"anchor,positive\nq1,a1\nq2,a2\nq3,a3\n", 3, None),
    # labels 0..k-1, as most label columns are: a label of 0 is a label, not a missing one
    (
        "text",
        "zero-label.jsonl",
        b'{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "c", "label": 0}\n',
        3,
        2,
    ),
    # what spreadsheets save as "CSV UTF-8": a byte-order mark, then CRLF lines
    ("text", "bom.csv", b"\xef\xbb\xbftext,label\r\nfoo,1\r\nbar,2\r\n", 2, 2),
    ("text", "t.json", b'[{"text": "a", "label": 0},\n {"text": "b", "label": 1}]', 2, 2),  # one JSON array
    ("text", "t.ndjson", b'{"text": "a"}\n{"text": "b"}\n', 2, None),  # JSON Lines by another name
    ("text", "t.txt", b"a first text\n\n{a second, with a comma}\n", 2, None),  # one text a line, as embed reads
    # as Hugging Face datasets and pandas write texts
    ("text", "t.parquet", parquet(pa.table({"text": ["a cat", "a dog", "a cow"], "label": ["x", "y", "x"]})), 3, 2),
    ("text", "pairs.parquet", parquet(pa.table({"anchor": ["q1", "q2"], "positive": ["a1", "a2"]})), 2, None),
    ("vectors", "v.pq", parquet(pa.table({"a": [1.0, 2.0], "b": [3, 4]})), 2, None),
    ("text", "bom.jsonl", b'\xef\xbb\xbf{"text": "a"}\n{"text": "b"}\n', 2, None),
    ("vectors", "bom-vectors.csv", b"\xef\xbb\xbfa,b,label\r\n1,2,x\r\n3,4,y\r\n", 2, 2),
    ("vectors", "v.csv", b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n", 3, 2),
    # compressed as pandas (to_csv("v.csv.gz")) and gzip write them: stored and read decompressed
    ("vectors", "v.csv.gz", gzip.compress(b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n"), 3, 2),
    ("text", "t.jsonl.gz", gzip.compress(b'{"text": "a cat"}\n{"text": "a dog"}\n'), 2, None),
    ("vectors", "v.tsv", b"a\tb\tlabel\n1.5\t2\tx\n3\t4\ty\n", 2, 2),  # tab-separated, by its extension too
    ("text", "t.tsv", b"text\tlabel\nhello, world\tx\nbye\ty\n", 2, 2),
    ("vectors", "v.npy", npy(np.arange(12, dtype=np.float32).reshape(4, 3)), 4, None),
    ("vectors", "savetxt.csv", b"5.0e-01,1.0e+00\n2.5e-01,3.0e+00\n1.0e+00,2.0e+00\n", 3, None),  # no header row
    ("vectors", "v.parquet", parquet(pa.table({"a": [1.0, 2.0], "b": [3, 4], "label": [0, 1]})), 2, 2),
    # embeddings as pandas, Polars and Hugging Face datasets write them: one list of numbers a record
    (
        "vectors",
        "lists.parquet",
        parquet(pa.table({"embedding": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "label": [0, 1]})),
        2,
        2,
    ),
    (
        "vectors",
        "fixed.parquet",
        parquet(pa.table({"e": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int8(), 2))})),
        3,
        None,
    ),
    ("image", "i.zip", zipped({"cats/1.png": png(10), "cats/2.png": png(20), "dogs/1.png": png(30, 12)}), 3, 2),
    # as a Mac's Finder zips two folders: AppleDouble files under __MACOSX/ and .DS_Store beside the images
    (
        "image",
        "mac.zip",
        zipped(
            {
                "cats/1.png": png(10),
                "cats/.DS_Store": b"\0\0\0\1Bud1",
                "dogs/1.png": png(30),
                "__MACOSX/cats/._1.png": b"\0\5\26\7 AppleDouble",
                "__MACOSX/dogs/._1.png": b"\0\5\26\7",
            }
        ),
        2,
        2,
    ),
    # every format Pillow reads by itself; before, all but .png and .jpg were left out unseen (the class of WebP
    # images with them); files that are not images beside them (Windows' Thumbs.db, notes) are left out
    (
        "image",
        "formats.zip",
        zipped(
            {
                "cats/1.webp": image_file(10, "WEBP"),
                "cats/2.AVIF": image_file(20, "AVIF"),
                "cats/3.bmp": image_file(30, "BMP"),
                "cats/Thumbs.db": b"\xd0\xcf\x11\xe0 not an image",
                "dogs/1.gif": image_file(40, "GIF"),
                "dogs/2.tif": image_file(50, "TIFF"),
                "dogs/3.tiff": image_file(60, "TIFF"),
                "dogs/4.jpeg": image_file(70, "JPEG"),
                "notes.txt": b"taken in 2026",
                "webp-only/1.webp": image_file(80, "WEBP"),
            }
        ),
        8,
        3,
    ),
    ("image", "digits.npz", digits_npz(), 1797, 10),
    ("image", "sixteen-bit.npz", npz(images=np.full((3, 4, 4), 40000, dtype=np.uint16), labels=[0, 1, 1]), 3, 2),
]


@pytest.mark.parametrize(("modality", "name", "content", "count", "labels"), GOOD, ids=[g[1] for g in GOOD])
def test_each_format_is_accepted_counted_and_hashed(client, auth, modality, name, content, count, labels) -> None:
    response = post(client, auth, modality, name, content)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["num_records"] == count and body["num_labels"] == labels
    import hashlib

    assert body["sha256"] == hashlib.sha256(content).hexdigest() and body["size_bytes"] == len(content)
    assert client.get(f"/v1/datasets/{body['id']}", headers=auth).json()["id"] == body["id"]


def test_images_of_several_sizes_take_the_size_most_of_them_have(client, auth) -> None:
    """Before, every image was resized to the first's by file name: here a 4x4 thumbnail sorted first would have
    shrunk the 16x16 images to 4x4."""
    photos = zipped({"a/0-thumb.png": png(1, 4), "a/1.png": png(2, 16), "b/1.png": png(3, 16), "b/2.png": png(4, 16)})
    body = post(client, auth, "image", "sizes.zip", photos).json()
    assert body["details"]["shape"] == [4, 1, 16, 16], body
    tie = zipped({"a/1.png": png(1, 8), "b/1.png": png(2, 12)})  # as many of each: the larger
    assert post(client, auth, "image", "tie.zip", tie).json()["details"]["shape"] == [2, 1, 12, 12]


def test_photos_are_stored_at_most_512_pixels_a_side(client, auth) -> None:
    """Phone photos (here 4032x3024 and one portrait) shrink, their aspect kept, to the longer side image models
    can use (`EMBEDTRAIN_MAX_IMAGE_SIDE`); kept whole, 230 would fill a 24 GiB machine at upload."""

    def photo(width: int, height: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, format="JPEG")
        return buffer.getvalue()

    photos = zipped({"a/1.jpg": photo(4032, 3024), "a/2.jpg": photo(4032, 3024), "b/1.jpg": photo(3024, 4032)})
    body = post(client, auth, "image", "photos.zip", photos).json()
    assert body["details"]["shape"] == [3, 3, 384, 512], body  # the portrait is conformed as before


BAD = [
    ("empty file", "text", "t.jsonl", b"", "empty"),
    ("wrong columns", "text", "t.jsonl", b'{"sentence": "x"}\n', "no column 'text' (its columns: ['sentence'])"),
    (
        "csv without text",
        "text",
        "t.csv",
        b"sentence,label\nx,1\n",
        "no column 'text' (its columns: ['sentence', 'label'])",
    ),
    ("pair without positive", "text", "t.jsonl", b'{"anchor": "q"}\n', "no column 'positive'"),
    (
        "several labels",
        "text",
        "t.jsonl",
        b'{"text": "a", "label": ["x", "y"]}\n',
        "record 1: a label must be one string",
    ),
    ("not json", "text", "t.jsonl", b'{"text": "x"\n', "not valid JSON"),
    ("non-UTF-8", "text", "t.csv", b"text\n\xff\xfe bad\n", "UTF-8"),
    ("ragged csv text", "text", "t.csv", b"text,label\na,1\nb\n", "number of fields"),
    ("ragged csv vectors", "vectors", "v.csv", b"a,b\n1,2\n3\n", "cannot be read"),
    ("NaN in vectors", "vectors", "v.csv", b"a,b\n1,nan\n3,4\n", "empty or NaN"),
    ("inf in csv", "vectors", "v.csv", b"a,b\n1,inf\n3,4\n", "NaN or infinite"),
    ("inf in npy", "vectors", "v.npy", npy(np.array([[1.0, np.inf]])), "NaN or infinite"),
    ("1-D npy", "vectors", "v.npy", npy(np.arange(3.0)), "2-D"),
    ("pickled npy", "vectors", "v.npy", npy(np.array([{"a": 1}], dtype=object)), "cannot be read"),
    ("text column in vectors", "vectors", "v.csv", b"a,b\n1,x\n2,y\n", "not numeric"),
    ("pandas index in csv", "vectors", "v.csv", b",a,b\n0,1,2\n1,3,4\n", "column 1 of the header has no name"),
    ("ragged lists", "vectors", "v.parquet", parquet(pa.table({"e": [[1.0, 2.0], [3.0]]})), "one length, not [1, 2]"),
    (
        "lists of text",
        "vectors",
        "v.parquet",
        parquet(pa.table({"e": [["a"], ["b"]]})),
        "is not numeric (list<",
    ),
    ("null in a list", "vectors", "v.parquet", parquet(pa.table({"e": [[1.0, None], [3.0, 4.0]]})), "inside its lists"),
    ("corrupt image", "image", "i.zip", zipped({"c/1.png": b"\x89PNG garbage"}), "not a readable"),
    ("dot-dot entry", "image", "i.zip", zipped({"../evil/1.png": png(1)}), "'..' path"),
    ("absolute entry", "image", "i.zip", zipped({"/etc/1.png": png(1)}), "absolute"),
    ("no class folder", "image", "i.zip", zipped({"1.png": png(1)}), "class folder"),
    (
        "a phone's HEIC photo",
        "image",
        "i.zip",
        zipped({"cats/1.png": png(1), "cats/IMG_0001.HEIC": b"\0\0\0\x18ftypheic"}),
        "entry 'cats/IMG_0001.HEIC' is an image in a format this service does not read: convert the images to PNG, "
        "JPEG, WebP, AVIF, BMP, GIF or TIFF",
    ),
    ("no images", "image", "i.zip", zipped({"cats/notes.txt": b"x"}), "the archive holds no images (PNG, JPEG, WebP"),
    ("not a zip", "image", "i.zip", b"PK\x03\x04 not really", "cannot be read"),
    ("normalised npz", "image", "i.npz", npz(images=np.full((2, 4, 4), -0.5, dtype=np.float32)), "[-0.5, -0.5]"),
    ("raw-unit npz", "image", "i.npz", npz(images=np.full((2, 4, 4), 3000.0)), "[0, 1] or [0, 255]"),
    ("npz without images", "image", "i.npz", zipped({"x.npy": npy(np.zeros((2, 4, 4)))}), "'images'"),
    ("wrong format for modality", "image", "i.csv", b"a\n1\n", "from the file name (.csv); pass format= one of"),
    ("unknown extension", "text", "t.docx", b"hello\n", "from the file name (.docx)"),
    ("no extension", "text", "texts", b"hello\n", "the file name has no extension"),
    ("json not an array", "text", "t.json", b'{"text": "a"}', "one array of objects"),
    ("corrupt gzip", "text", "t.jsonl.gz", b"\x1f\x8b\x08\x00 not deflate", "not valid gzip"),
    ("cut-off gzip", "vectors", "v.csv.gz", gzip.compress(b"a,b\n1,2\n" * 1000)[:40], "not valid gzip"),
    ("gzip of a wrong format", "image", "i.csv.gz", gzip.compress(b"a\n1\n"), "from the file name (.csv)"),
    ("numbers as texts", "text", "t.parquet", parquet(pa.table({"text": [1, 2]})), "row 1: column 'text' must be"),
    ("text parquet, no text", "text", "t.parquet", parquet(pa.table({"body": ["a"]})), "no column 'text'"),
    ("json array of strings", "text", "t.json", b'["a", "b"]', "record 1: each record must be a JSON object"),
    ("broken json", "text", "t.json", b'[{"text": "a"},\n {"text": }]', "not valid JSON at line 2 column"),
]


@pytest.mark.parametrize(("case", "modality", "name", "content", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_are_refused_and_leave_nothing(client, auth, settings, case, modality, name, content, message):
    response = post(client, auth, modality, name, content)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    error = response.json()["error"]
    assert message in error["message"], (case, error)
    assert client.get("/v1/datasets", headers=auth).json()["total"] == 0
    staged = settings.storage_root / "tmp"
    assert not staged.exists() or not any(staged.iterdir())


def test_zip_bomb_and_oversized_uploads_are_refused(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    small = make_settings(tmp_path, pg_url, redis_url, max_unzipped_bytes=1 << 20, max_upload_bytes=200_000)
    key = {"Authorization": f"Bearer {keys.make('bomb')}"}
    bomb = zipped({"c/big.png": b"\0" * (50 << 20)})  # 50 MiB of zeros deflate to ~50 KiB
    with TestClient(create_app(small)) as client:
        response = post(client, key, "image", "bomb.zip", bomb)
        assert response.status_code == 422 and "unpacks to" in response.json()["error"]["message"]
        response = post(client, key, "vectors", "big.npy", npy(np.zeros((600, 100), dtype=np.float32)))
        assert response.status_code == 413 and "larger than the limit" in response.json()["error"]["message"]
        gzip_bomb = gzip.compress(b"1,2\n" * (1 << 20))  # 4 MiB of text in ~10 KiB, over the 200 kB limit
        response = post(client, key, "vectors", "bomb.csv.gz", gzip_bomb)
        assert response.status_code == 413 and "unpacks to more than" in response.json()["error"]["message"]
        assert not any((small.storage_root / "tmp").iterdir())  # neither the upload nor what it unpacked to stays


def test_images_too_large_in_pixels_are_refused(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    small = make_settings(tmp_path, pg_url, redis_url, max_image_pixels=100)
    key = {"Authorization": f"Bearer {keys.make('pixels')}"}
    with TestClient(create_app(small)) as client:
        response = post(client, key, "image", "i.zip", zipped({"c/1.png": png(1, size=64)}))
        assert response.status_code == 422 and "pixels" in response.json()["error"]["message"]


def test_other_tenants_see_404_and_admins_see_everything(client, auth, keys) -> None:
    mine = post(client, auth, "vectors", "v.csv", b"a,b\n1,2\n3,4\n").json()
    other = {"Authorization": f"Bearer {keys.make('someone-else')}"}
    assert client.get(f"/v1/datasets/{mine['id']}", headers=other).status_code == 404
    assert client.delete(f"/v1/datasets/{mine['id']}", headers=other).status_code == 404
    assert client.get("/v1/datasets", headers=other).json()["total"] == 0
    admin = {"Authorization": f"Bearer {keys.make('root', admin=True)}"}
    assert client.get(f"/v1/datasets/{mine['id']}", headers=admin).status_code == 200


def test_pages_of_datasets_created_at_one_instant_neither_repeat_nor_skip_one(client, auth, settings) -> None:
    """Rows with one created_at (an import, a clock's coarse tick) still page in one order: the id breaks ties."""
    ids = {post(client, auth, "vectors", f"v{i}.csv", b"a,b\n1,2\n").json()["id"] for i in range(24)}
    with transaction(settings) as session:
        session.execute(update(Dataset).where(Dataset.id.in_(ids)).values(created_at=datetime(2026, 1, 1)))
    pages = [client.get(f"/v1/datasets?limit=5&offset={offset}", headers=auth).json()["items"]
             for offset in range(0, 25, 5)]  # fmt: skip
    listed = [row["id"] for page in pages for row in page]
    assert sorted(listed) == sorted(ids), "a row was listed twice or not at all"


def test_delete_is_refused_while_a_job_uses_the_dataset(client, auth) -> None:
    dataset = post(client, auth, "vectors", "v.csv", b"a,b\n" + b"1,2\n3,4\n" * 10).json()
    config = {"data": {"modality": "vectors", "val_fraction": 0.0}, "train": {"batch_size": 4}}
    job = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset["id"], "config": config}).json()
    refused = client.delete(f"/v1/datasets/{dataset['id']}", headers=auth)
    assert refused.status_code == 409 and "cancel them first" in refused.json()["error"]["message"]
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 204
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 404
    assert json.loads(client.get(f"/v1/jobs/{job['id']}", headers=auth).text)["dataset_id"] is None


def test_the_schemas_formats_and_modalities_are_the_readers() -> None:
    """The request and answer schemas spell out the readers' formats and modalities as literals, for the OpenAPI
    document; one added to the readers and not to the schema would be refused at upload by a 422, or fail the
    answer's validation."""
    from typing import get_args

    from api.datasets.schemas import DatasetFormat, DatasetModality
    from core.data.readers import FORMATS

    assert set(get_args(DatasetModality)) == set(FORMATS)
    assert set(get_args(DatasetFormat)) == set().union(*FORMATS.values())


NAMED_LABEL = [
    ("text csv", "text", "t.csv", b"text,category\nhello,a\nhi,b\n"),
    ("text jsonl", "text", "t.jsonl", b'{"text": "hello", "category": "a"}\n{"text": "hi", "category": "b"}\n'),
    ("vectors csv", "vectors", "v.csv", b"f1,f2,category\n1,2,a\n3,4,b\n"),
    ("vectors parquet", "vectors", "v.parquet", parquet(pa.table({"f": [1.0, 2.0], "category": ["a", "b"]}))),
]


@pytest.mark.parametrize(("case", "modality", "name", "content"), NAMED_LABEL, ids=[c[0] for c in NAMED_LABEL])
def test_a_label_column_named_at_upload_must_be_in_the_file(client, auth, case, modality, name, content) -> None:
    """A ``label_column`` the uploader names is one they mean: a misspelt one is refused with the file's columns,
    where before a text file was stored without labels (every label-based metric and picture silently absent) and
    a vectors file was refused for its real label column being "not numeric"."""
    response = post(client, auth, modality, name, content, label_column="categroy")
    assert response.status_code == 422, (case, response.text)
    error = response.json()["error"]
    assert error["param"] == "label_column" and "no label column 'categroy'" in error["message"], error
    assert "category" in error["message"], error  # the columns the file has, to see the typo
    assert client.get("/v1/datasets", headers=auth).json()["total"] == 0
    labelled = post(client, auth, modality, name, content, label_column="category")
    assert labelled.status_code == 201, labelled.text
    assert labelled.json()["num_labels"] == 2
    if modality == "text":  # the default column, "label", is optional: a text file without it has no labels
        unnamed = post(client, auth, modality, name, content)
        assert unnamed.status_code == 201 and unnamed.json()["num_labels"] is None, unnamed.text


def test_a_named_label_column_without_a_value_is_refused_and_images_take_none(client, auth) -> None:
    empty = post(client, auth, "text", "t.csv", b"text,category\nhello,\nhi,\n", label_column="category")
    assert empty.status_code == 422 and "holds no labels" in empty.json()["error"]["message"], empty.text
    image = post(client, auth, "image", "i.zip", zipped({"c/1.png": png(1), "d/2.png": png(2)}), label_column="x")
    assert image.status_code == 422, image.text
    assert image.json()["error"]["param"] == "label_column" and "class folders" in image.json()["error"]["message"]
    stored = post(client, auth, "image", "i.zip", zipped({"c/1.png": png(1), "d/2.png": png(2)}))
    assert stored.status_code == 201, stored.text
    assert stored.json()["details"]["label_column"] is None  # before: "label", which no image file has


QUERIES = b"query,passage,topic\nwhere is paris,paris is in france,geo\nwho wrote hamlet,shakespeare did,books\n"


def test_text_columns_named_at_upload_are_kept_for_every_later_read(client, auth) -> None:
    """A retrieval set's query and passage columns are read as pairs where the upload names them; before, every such
    file was refused for having no 'text' column and had to be rewritten. The names are kept with the dataset."""
    refused = post(client, auth, "text", "q.csv", QUERIES)
    assert refused.status_code == 422 and "anchor_column and positive_column" in refused.text, refused.text
    pairs = post(client, auth, "text", "q.csv", QUERIES, anchor_column="query", positive_column="passage",
                 label_column="topic")  # fmt: skip
    assert pairs.status_code == 201, pairs.text
    details = pairs.json()["details"]
    assert (details["paired"], details["anchor_column"], details["positive_column"]) == (True, "query", "passage")
    assert pairs.json()["num_labels"] == 2
    texts = post(client, auth, "text", "q.csv", QUERIES, text_column="passage")
    assert texts.status_code == 201 and texts.json()["details"]["paired"] is False, texts.text


@pytest.mark.parametrize(
    ("fields", "modality", "param", "message"),
    [
        ({"anchor_column": "query"}, "text", "positive_column", "positive_column is missing"),
        ({"text_column": "query", "anchor_column": "query", "positive_column": "passage"}, "text", "text_column",
         "not both"),
        ({"anchor_column": "query", "positive_column": "query"}, "text", "positive_column", "the same column"),
        ({"anchor_column": "querry", "positive_column": "passage"}, "text", "anchor_column",
         "no column 'querry' (its columns: ['query', 'passage', 'topic'])"),
        ({"text_column": "body"}, "text", "text_column", "no column 'body'"),
        ({"text_column": "query"}, "vectors", "text_column", "for text datasets"),
        ({"label_column": "topic"}, "text", "label_column", "no columns to name"),  # sent as plain text
    ],
)  # fmt: skip
def test_text_columns_that_cannot_be_read_as_named_are_refused(client, auth, fields, modality, param, message) -> None:
    name = "q.txt" if message == "no columns to name" else "q.csv"
    answer = post(client, auth, modality, name, QUERIES, **fields)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and message in error["message"], error
    assert client.get("/v1/datasets", headers=auth).json()["total"] == 0


def test_an_upload_form_field_the_route_does_not_read_or_a_second_file_is_refused(client, auth) -> None:
    """Like a query parameter, a form field the upload does not read was ignored: ``lable_column=category`` stored the
    file without its labels, and a second ``file`` part was dropped, one of the two files stored."""
    rows = b"text,category\na cat,x\na dog,y\n"
    misspelt = post(client, auth, "text", "t.csv", rows, lable_column="category")
    assert misspelt.status_code == 422, misspelt.text
    error = misspelt.json()["error"]
    assert error["param"] == "lable_column", error
    assert error["message"] == ("unknown form field 'lable_column'; POST /v1/datasets takes: anchor_column, file, "
                                "format, label_column, modality, name, positive_column, text_column"), error  # fmt: skip
    two = client.post("/v1/datasets", headers=auth, data={"modality": "text"},
                      files=[("file", ("a.csv", rows)), ("file", ("b.csv", b"text\nanother\n"))])  # fmt: skip
    assert two.status_code == 422, two.text
    assert two.json()["error"]["param"] == "file", two.text
    assert "'file' given 2 times" in two.json()["error"]["message"], two.text
    assert client.get("/v1/datasets", headers=auth).json()["total"] == 0
    stored = post(client, auth, "text", "t.csv", rows, label_column="category")
    assert stored.status_code == 201 and stored.json()["num_labels"] == 2, stored.text
