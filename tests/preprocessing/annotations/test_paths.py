"""Tests of media path resolution and confinement."""

import json
import os

import pytest

from preprocessing.annotations import resolve_media_path
from preprocessing.records import Caption, VideoAnnotation
from tests.preprocessing.annotations.helpers import read_all, write


def _ann(video_id, media_path=None):
    return VideoAnnotation(video_id=video_id, duration=1.0, captions=(), media_path=media_path)


def test_resolve_media_path_by_id_and_media_path(tmp_path):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    for name in ("a.webm", "a.wav", "b.mp4", "sub/c.mkv"):
        (videos / name).write_bytes(b"\0")
    d = str(videos)
    assert resolve_media_path(d, _ann("a")) == os.path.join(d, "a.webm")  # first existing in the default order
    assert resolve_media_path(d, _ann("a"), extensions=(".wav", ".webm")) == os.path.join(d, "a.wav")
    assert resolve_media_path(d, _ann("x", media_path="sub/c.mkv")) == os.path.join(d, "sub/c.mkv")
    with pytest.raises(FileNotFoundError) as e:
        resolve_media_path(d, _ann("zz"), extensions=(".mp4", ".ogg"))
    assert "'zz'" in str(e.value) and "zz.mp4" in str(e.value) and "zz.ogg" in str(e.value)
    with pytest.raises(FileNotFoundError, match="sub/missing.mp4"):
        resolve_media_path(d, _ann("b", media_path="sub/missing.mp4"))  # media_path wins over the id
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_media_path(str(tmp_path / "nodir"), _ann("b"))
    with pytest.raises(ValueError, match="suffixes like '.mp4'"):
        resolve_media_path(d, _ann("b"), extensions=("mp4",))
    with pytest.raises(ValueError, match="suffixes like '.mp4'"):
        resolve_media_path(d, _ann("b"), extensions=())


def test_resolve_media_path_refuses_escapes(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"\0")
    (videos / "evil.mp4").symlink_to(outside)
    (videos / "inner").symlink_to(tmp_path)  # a directory link that leads out
    (videos / "ok.mp4").write_bytes(b"\0")
    (videos / "alias.mp4").symlink_to(videos / "ok.mp4")  # a link that stays inside is fine
    d = str(videos)
    for ann in (
        _ann("x", media_path=str(outside)),  # absolute
        _ann("x", media_path="../secret.mp4"),
        _ann("x", media_path="sub/../../secret.mp4"),
        _ann("../secret"),  # an id that climbs out
        _ann("evil"),  # a symlinked file pointing outside
        _ann("x", media_path="inner/secret.mp4"),  # a symlinked dir pointing outside
        _ann("x", media_path="."),  # the directory itself
    ):
        with pytest.raises(ValueError, match="is not a file inside videos dir"):
            resolve_media_path(d, ann)
    assert resolve_media_path(d, _ann("alias")) == os.path.join(d, "alias.mp4")
    # A symlinked videos dir is resolved as a whole.
    (tmp_path / "link").symlink_to(videos)
    assert resolve_media_path(str(tmp_path / "link"), _ann("ok")) == os.path.join(str(tmp_path / "link"), "ok.mp4")
    # Remote paths are checked lexically, before any file system is touched.
    with pytest.raises(ValueError, match="climbs out"):
        resolve_media_path("gs://bucket/videos", _ann("x", media_path="a/../../b.mp4"))
    with pytest.raises(ValueError, match="absolute"):
        resolve_media_path("gs://bucket/videos", _ann("x", media_path="/etc/passwd"))


def test_url_paths_go_through_gfile(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "v1.mkv").write_bytes(b"\0")
    url = f"file://{videos}"
    assert resolve_media_path(url, _ann("v1")) == f"{url}/v1.mkv"
    with pytest.raises(FileNotFoundError, match=f"{url}/v2.mp4"):
        resolve_media_path(url, _ann("v2"))
    line = json.dumps({"qid": 1, "query": "q", "duration": 10, "vid": "v1", "relevant_windows": [[0, 2]]})
    path = write(tmp_path / "q.jsonl", line + "\n")
    videos_read, rejected, _ = read_all("qvhighlights", f"file://{path}", split="val")
    assert rejected == [] and videos_read["v1"].captions == (Caption(0.0, 2.0, "q"),)
