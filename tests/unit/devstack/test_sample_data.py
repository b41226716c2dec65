"""The demo's sample download, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from devstack import sample_data


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_zip_of_landmark_folders_becomes_the_data_folder(http_root, tmp_path):
    served, base = http_root
    with zipfile.ZipFile(served / "sample.zip", "w") as archive:
        for landmark in ("tower", "bridge"):
            for n in range(3):
                archive.writestr(f"sample/{landmark}/{n}.jpg", _jpeg((n * 40, 10, 200)))
    root = sample_data.fetch_sample(f"{base}/sample.zip", tmp_path / "work")
    assert sorted(p.name for p in root.iterdir()) == ["bridge", "tower"]
    assert len(list((root / "tower").iterdir())) == 3


def test_google_landmarks_tar_with_labels_csv_is_grouped_by_landmark(http_root, tmp_path):
    served, base = http_root
    ids = {f"{c}{c}{c}0000000000{n:03d}": ("7" if n < 4 else "9") for n, c in enumerate("abcdefab")}
    with tarfile.open(served / "images_000.tar", "w") as archive:
        for photo_id in ids:
            data = _jpeg((1, 2, 3))
            info = tarfile.TarInfo(f"{photo_id[0]}/{photo_id[1]}/{photo_id[2]}/{photo_id}.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    rows = ["id,url,landmark_id"] + [f"{i},http://x/{i}.jpg,{lm}" for i, lm in ids.items()]
    rows.append("ffff000000000999,http://x/y.jpg,5")  # a photo the archive does not hold
    (served / "train.csv").write_text("\n".join(rows) + "\n")
    root = sample_data.fetch_sample(
        f"{base}/images_000.tar", tmp_path / "work", labels_url=f"{base}/train.csv", min_photos=4
    )
    assert {p.name: len(list(p.iterdir())) for p in root.iterdir()} == {"7": 4, "9": 4}


def test_unreachable_url_raises_sample_unavailable(tmp_path):
    with pytest.raises(sample_data.SampleUnavailable, match="could not download"):
        sample_data.fetch_sample("http://127.0.0.1:9/nothing.tar", tmp_path, timeout_s=2)


def test_archive_entries_escaping_the_folder_are_not_unpacked(tmp_path):
    archive_path = tmp_path / "evil.tar"
    with tarfile.open(archive_path, "w") as archive:
        data = _jpeg((0, 0, 0))
        for name in ("../outside.jpg", "/abs/x.jpg", "ok/lm/fine.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    written = sample_data.unpack_photos(archive_path, tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == ["ok/lm/fine.jpg"]
    assert not (tmp_path / "outside.jpg").exists()


def test_archive_without_landmark_folders_or_labels_is_refused(http_root, tmp_path):
    served, base = http_root
    with zipfile.ZipFile(served / "flat.zip", "w") as archive:
        archive.writestr("a.jpg", _jpeg((5, 5, 5)))
    with pytest.raises(sample_data.SampleUnavailable, match="no landmark folders"):
        sample_data.fetch_sample(f"{base}/flat.zip", tmp_path / "work")
