"""Tests of the built-in corpus generator: config errors, layout, media, annotations, determinism."""

import hashlib
import json
import os
import pathlib
import platform
import re
import subprocess
import sys

import av
import numpy as np
import pytest

from corpus import synthetic, tts
from corpus import vocab as corpus_vocab
from corpus.synthetic import SyntheticConfig

# A tiny corpus (about 1 s of CPU per video): with this seed three of its four
# videos have an audio-dependent step and an object at rest.
CORPUS = {
    "videos": 4,
    "languages": "en,mr,hi,ja",
    "seed": 3,
    "min_duration": 14.0,
    "max_duration": 16.0,
    "audio_dependent_fraction": 0.5,
}
FPS = 10
SR = 16000
REPO = pathlib.Path(__file__).resolve().parents[2]


def _argv(out, **overrides):
    flags = {**CORPUS, **overrides}
    argv = ["--out", str(out), "--no_progress"]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    return argv


def _config(out, **overrides) -> SyntheticConfig:
    return SyntheticConfig(out=str(out), **{**CORPUS, **overrides})


def _decode(path):
    """(frames uint8 (T, H, W, 3), audio float32 (S,), container facts) of an mp4."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.thread_count = 1
        audio = container.streams.audio[0]
        facts = {
            "video_codec": video.codec_context.name,
            "fps": float(video.average_rate),
            "size": (video.codec_context.width, video.codec_context.height),
            "audio_codec": audio.codec_context.name,
            "sample_rate": audio.codec_context.sample_rate,
            "channels": audio.codec_context.channels,
        }
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, samples, facts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    """The corpus made through the command line, in this process (workers=1)."""
    out = tmp_path_factory.mktemp("corpus_a")
    assert synthetic.main(_argv(out, workers=1)) == 0
    return out


@pytest.fixture(scope="module")
def corpus_two_workers(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """The same corpus made through the library with two worker processes."""
    out = tmp_path_factory.mktemp("corpus_b")
    summary = synthetic.generate(_config(out, workers=2), progress=False)
    return out, summary


@pytest.fixture(scope="module")
def annotations(corpus) -> dict:
    return json.loads((corpus / "annotations.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def decoded(corpus, annotations) -> dict:
    return {vid: _decode(corpus / "videos" / f"{vid}.mp4") for vid in annotations}


# --- Config and command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"videos": 0}, r"videos must be >= 1, got 0"),
        ({"videos": -3}, r"videos must be >= 1, got -3"),
        ({"languages": "en,fr"}, r"Unsupported language 'fr'; supported: en, mr, hi, ja"),
        ({"languages": "en=0"}, r"Weight of language 'en' must be a positive number"),
        ({"languages": "en=x"}, r"Weight of language 'en' must be a number, got 'x'"),
        ({"languages": "en,en"}, r"'en' is given twice"),
        ({"languages": ""}, r"No languages"),
        ({"min_duration": 0.0}, r"min_duration must be in \[8.0, 3600.0\].*got 0.0"),
        ({"min_duration": -5.0}, r"min_duration must be in .*got -5.0"),
        ({"min_duration": 40.0, "max_duration": 30.0}, r"max_duration must be in \[min_duration=40.0"),
        ({"audio_dependent_fraction": 1.5}, r"audio_dependent_fraction must be in \[0, 1\], got 1.5"),
        ({"split": (0.5, 0.2, 0.2)}, r"split must be three fractions"),
        ({"split": (0.8, 0.2)}, r"split must be three fractions"),
        ({"split": (0.0, 0.5, 0.5)}, r"split must be three fractions"),
        ({"split": "0.7,x,0.15"}, r"split must be three numbers"),
        ({"width": 161}, r"width and height must be even"),
        ({"height": 20}, r"height must be in \[48, 1080\], got 20"),
        ({"fps": 0}, r"fps must be in \[1, 60\], got 0"),
        ({"sample_rate": 12345}, r"sample_rate must be one of .*got 12345"),
        ({"workers": 0}, r"workers must be in \[1, 256\], got 0"),
        ({"seed": -1}, r"seed must be >= 0, got -1"),
        ({"videos": 2.5}, r"videos must be an integer, got 2.5"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **overrides)


def test_config_rejects_empty_out():
    with pytest.raises(ValueError, match="out must be a non-empty path"):
        SyntheticConfig(out="")


def test_parse_languages_weights():
    assert synthetic.parse_languages("en=4, ja=1") == {"en": 4.0, "ja": 1.0}
    assert synthetic.parse_languages("mr") == {"mr": 1.0}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"languages": "en,xx"}, "Unsupported language 'xx'"),
        ({"videos": 0}, "videos must be >= 1"),
        ({"min_duration": 20, "max_duration": 10}, "max_duration must be in"),
        ({"split": "0.9,0.2,0.1"}, "split must be three fractions"),
    ],
)
def test_cli_rejects_bad_values_with_exit_code_2(tmp_path, capsys, overrides, message):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(_argv(tmp_path / "out", **overrides))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing may be written before the arguments are checked"


def test_cli_rejects_unknown_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.parse_args(["--out", str(tmp_path), "--video", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --video" in capsys.readouterr().err


def test_unwritable_out_dir_is_an_error_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"Output directory '.*a_file/corpus' is not writable"):
        synthetic.generate(_config(blocker / "corpus"), progress=False)
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(_argv(blocker / "corpus"))
    assert exit_info.value.code == 2
    assert "is not writable" in capsys.readouterr().err


# --- Corpus-level decisions ----------------------------------------------------------------------


def test_languages_follow_their_weights():
    languages = synthetic.assign_languages({"en": 4.0, "ja": 1.0}, 100, seed=0)
    assert languages.count("en") == 80 and languages.count("ja") == 20
    assert languages == synthetic.assign_languages({"ja": 1.0, "en": 4.0}, 100, seed=0)
    assert languages != synthetic.assign_languages({"en": 4.0, "ja": 1.0}, 100, seed=1)


def test_splits_partition_videos_within_each_language():
    ids = synthetic.video_ids(40)
    languages = synthetic.assign_languages({"en": 1.0, "mr": 1.0}, 40, seed=0)
    splits = synthetic.split_videos(ids, languages, (0.7, 0.15, 0.15), seed=0)
    assert sorted(sum(splits.values(), [])) == ids
    by_id = dict(zip(ids, languages))
    for code in ("en", "mr"):
        counts = [sum(by_id[v] == code for v in splits[name]) for name in ("train", "val", "test")]
        assert counts == [14, 3, 3]


def test_video_ids_sort_in_index_order():
    ids = synthetic.video_ids(1_000_001)
    assert ids[:2] == ["v_0000000", "v_0000001"] and ids == sorted(ids)


def test_plans_audio_dependent_steps_as_specified(tmp_path):
    cfg = SyntheticConfig(out=str(tmp_path), videos=60, min_duration=40, max_duration=60, seed=7)
    dependent = total = 0
    for index in range(cfg.videos):
        duration, segments = synthetic.plan_video(cfg, index)
        steps = [s for s in segments if s.is_step]
        assert steps and not steps[0].audio_dependent
        for i, step in enumerate(steps):
            earlier = steps[:i]
            if step.audio_dependent:
                # The object was shown before, never with this action.
                assert any(e.obj == step.obj and not e.audio_dependent for e in earlier)
                assert all(e.action != step.action for e in earlier if e.obj == step.obj)
                # The picture cannot tell it from a rest: the same object rests in some gap.
                assert any(not s.is_step and s.obj == step.obj for s in segments)
            else:
                assert all(e.obj != step.obj for e in earlier), "a visible step shows a new object"
        times = [(s.start, s.end) for s in segments]
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(times, times[1:]))
        assert all(3.0 - 1e-9 <= s.end - s.start <= 20.0 + 1e-9 for s in steps)
        assert 40.0 <= duration <= 60.0 and segments[-1].end <= duration - 2.0 + 1e-9
        dependent += sum(s.audio_dependent for s in steps)
        total += len(steps)
    assert 0.22 < dependent / total < 0.38, dependent / total
    none = SyntheticConfig(out=str(tmp_path), videos=5, audio_dependent_fraction=0.0)
    assert not any(s.audio_dependent for i in range(5) for s in synthetic.plan_video(none, i)[1])


# --- The generated corpus ------------------------------------------------------------------------


def test_writes_the_documented_layout(corpus, annotations):
    assert sorted(p.name for p in corpus.iterdir()) == ["annotations.json", "corpus.json", "splits.json", "videos"]
    ids = synthetic.video_ids(CORPUS["videos"])
    assert list(annotations) == ids
    assert sorted(p.name for p in (corpus / "videos").iterdir()) == [f"{v}.mp4" for v in ids]


def test_annotations_are_activitynet_captions(annotations):
    languages = set()
    for vid, entry in annotations.items():
        duration = entry["duration"]
        assert isinstance(duration, float) and duration > 0
        assert CORPUS["min_duration"] <= duration <= CORPUS["max_duration"]
        n = len(entry["timestamps"])
        assert n >= 1
        for start, end in entry["timestamps"]:
            assert 0 <= start < end <= duration
            assert round(start, 3) == start and round(end, 3) == end
        for key in ("sentences", "sentences_en", "audio_dependent", "steps", "narration"):
            assert len(entry[key]) == n, (vid, key)
        assert all(isinstance(s, str) and s.strip() for s in entry["sentences"] + entry["sentences_en"])
        assert set(entry["audio_dependent"]) <= {0, 1}
        language = entry["language"]
        languages.add(language)
        for step, sentence, english in zip(entry["steps"], entry["sentences"], entry["sentences_en"]):
            texture, colour, shape = step["object"].split()
            obj = corpus_vocab.SceneObject(shape, colour, texture)
            assert step["action"] in corpus_vocab.ACTIONS
            assert sentence == corpus_vocab.step_sentence(obj, step["action"], language).text
            assert english == corpus_vocab.step_sentence(obj, step["action"], "en").text
            assert colour in english.lower() and shape in english.lower()
            if language in ("mr", "hi"):
                assert re.search("[\u0900-\u097f]", sentence) and not re.search("[A-Za-z]", sentence)
            if language == "ja":
                # Written Japanese: kana and kanji, no spaces.
                assert " " not in sentence and sentence.endswith("。")
                assert re.search("[\u3040-\u30ff]", sentence) and re.search("[\u4e00-\u9fff]", sentence)
        for (start, end), (n_start, n_end) in zip(entry["timestamps"], entry["narration"]):
            assert 0 <= n_start < n_end <= duration
            assert start - 1.0 - 1e-3 <= n_start <= end, "narration starts near its step"
    assert languages == {"en", "mr", "hi", "ja"}
    assert any(1 in e["audio_dependent"] for e in annotations.values())


def test_splits_partition_the_ids(corpus, annotations):
    splits = json.loads((corpus / "splits.json").read_text())
    assert sorted(splits) == ["test", "train", "val"]
    members = sum(splits.values(), [])
    assert len(members) == len(set(members)) and set(members) == set(annotations)
    assert splits["train"]


def test_summary_is_recorded_and_consistent(corpus, annotations, corpus_two_workers):
    summary = synthetic.summarize(corpus)
    assert summary == corpus_two_workers[1]
    assert summary["videos"] == CORPUS["videos"]
    assert summary["languages"] == {"en": 1, "hi": 1, "ja": 1, "mr": 1}
    steps = sum(len(e["timestamps"]) for e in annotations.values())
    assert summary["steps"] == steps
    dependent = sum(sum(e["audio_dependent"]) for e in annotations.values())
    assert summary["audio_dependent_share"] == round(dependent / steps, 4)
    assert summary["hours"] == round(sum(e["duration"] for e in annotations.values()) / 3600, 4)
    record = json.loads((corpus / "corpus.json").read_text())
    assert record["summary"] == summary
    assert record["version"] == synthetic.GENERATOR_VERSION
    assert record["config"]["seed"] == CORPUS["seed"] and record["config"]["languages"]["ja"] == 1.0
    text = synthetic.format_summary(summary)
    assert f"{CORPUS['videos']} videos" in text and "ja 1" in text


def test_media_match_the_declared_format(annotations, decoded):
    for vid, (frames, samples, facts) in decoded.items():
        duration = annotations[vid]["duration"]
        expected_codec = "h264" if synthetic.video_codec() == "libx264" else "mpeg4"
        assert facts["video_codec"] == expected_codec and facts["audio_codec"] == "aac"
        assert facts["fps"] == FPS and facts["size"] == (160, 120)
        assert facts["sample_rate"] == SR and facts["channels"] == 1
        assert frames.shape[1:] == (120, 160, 3)
        assert abs(frames.shape[0] - duration * FPS) <= 1
        assert abs(samples.size / SR - duration) <= 1.0 / FPS


def test_narration_is_loud_speech_over_the_noise_floor(annotations, decoded):
    for vid, (_, samples, _) in decoded.items():
        window = SR // 20
        levels = np.sqrt(np.mean(samples[: samples.size // window * window].reshape(-1, window) ** 2, axis=1))
        floor = np.percentile(levels, 5)
        assert floor > 0, "there is room tone under everything"
        for start, end in annotations[vid]["narration"]:
            span = samples[int(start * SR) : int(end * SR)]
            assert np.sqrt(np.mean(span**2)) > 8 * floor, (vid, start, end)


def test_narration_is_the_step_sentence_spoken_where_annotated(annotations, decoded):
    # Re-synthesize each sentence with the recorded voice and find it in the decoded track:
    # this fails if the narration were missing, misplaced or another sentence.
    speaker = tts.Speaker(SR)
    for vid, entry in annotations.items():
        samples = decoded[vid][1]
        for step, (start, end) in zip(entry["steps"], entry["narration"]):
            texture, colour, shape = step["object"].split()
            obj = corpus_vocab.SceneObject(shape, colour, texture)
            text = corpus_vocab.step_sentence(obj, step["action"], entry["language"]).speech
            expected = speaker.synthesize(text, entry["language"], **entry["voice"])
            assert abs(expected.size / SR - (end - start)) < 0.002
            lag = 32
            segment = samples[int(round(start * SR)) - lag : int(round(start * SR)) + expected.size + lag]
            best = max(
                np.dot(segment[k : k + expected.size], expected)
                / (np.linalg.norm(segment[k : k + expected.size]) * np.linalg.norm(expected))
                for k in range(2 * lag + 1)
            )
            assert best > 0.8, (vid, step, best)


def _changed_pixels(frames: np.ndarray, start: float, end: float) -> int:
    """Most pixels that differ clearly (> 40 levels) from the segment's first frame."""
    clip = frames[int(round(start * FPS)) + 1 : int(round(end * FPS))].astype(np.int16)
    return int((np.abs(clip - clip[0]).max(axis=3) > 40).sum(axis=(1, 2)).max())


def test_visible_steps_move_and_audio_dependent_steps_barely_do(corpus, annotations, decoded):
    frame_pixels = 160 * 120
    cfg = _config(corpus)
    for index, (vid, entry) in enumerate(annotations.items()):
        frames = decoded[vid][0]
        first_start = entry["timestamps"][0][0]
        assert _changed_pixels(frames, 0.0, first_start) < 0.002 * frame_pixels, "the empty table is still"
        moved = {}
        for (start, end), dependent, step in zip(entry["timestamps"], entry["audio_dependent"], entry["steps"]):
            change = _changed_pixels(frames, start, end)
            if dependent:
                assert change < 0.012 * frame_pixels, (vid, step, change)
                assert change < moved[step["object"]] / 2, (vid, step, change)
            else:
                assert change > 0.015 * frame_pixels, (vid, step, change)
                moved[step["object"]] = change
        _, segments = synthetic.plan_video(cfg, index)
        for rest in (s for s in segments if not s.is_step):
            assert _changed_pixels(frames, rest.start, rest.end) < 0.012 * frame_pixels


def _digests(root: pathlib.Path) -> dict:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_media_with_any_number_of_workers(corpus, corpus_two_workers):
    # One corpus was encoded in this process, whose heap pytest has long used, the other in
    # two fresh worker processes: the mp4s, not only their pixels, must be the same.
    other, _ = corpus_two_workers
    mine, theirs = _digests(corpus), _digests(other)
    assert sorted(mine) == sorted(theirs)
    assert [name for name in mine if mine[name] != theirs[name]] == []


@pytest.mark.e2e
def test_media_do_not_depend_on_what_the_process_held_before(tmp_path):
    # glibc's MALLOC_PERTURB_ fills freed memory with one byte and fresh allocations with its
    # complement, so an encoder that reads memory it never wrote gives different bytes
    # under two values, on every run. x264's macroblock tree did, in the first GOP.
    if platform.libc_ver()[0] != "glibc":
        pytest.skip(f"MALLOC_PERTURB_ is glibc's; this is {platform.libc_ver()!r}.")
    digests = []
    for perturb in ("1", "254"):
        out = tmp_path / f"perturb_{perturb}"
        argv = _argv(out, videos=1, workers=1)
        env = {**os.environ, "MALLOC_PERTURB_": perturb}
        subprocess.run([sys.executable, "-m", "corpus.synthetic", *argv], cwd=REPO, env=env, check=True)
        digests.append(_digests(out))
    assert digests[0] == digests[1]


def _x264_settings(path) -> str:
    """The settings that libx264 writes into the first video packet (an unregistered-user-data SEI)."""
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            data = bytes(packet)
            start = data.find(b"x264 - core")
            if start >= 0:
                return data[start : data.index(b"\0", start)].decode("ascii")
    raise AssertionError(f"{path} has no x264 settings SEI.")


@pytest.mark.skipif(synthetic.video_codec() != "libx264", reason="this PyAV build has no libx264")
def test_video_is_encoded_with_settings_that_make_it_reproducible(corpus, annotations):
    for vid in annotations:
        settings = _x264_settings(corpus / "videos" / f"{vid}.mp4")
        options = dict(item.split("=", 1) for item in settings.split() if "=" in item)
        assert options["threads"] == "1" and options["lookahead_threads"] == "1", options
        assert options["sliced_threads"] == "0" and options["mbtree"] == "0", options


def test_different_seed_gives_a_different_corpus(tmp_path, corpus, decoded):
    out = tmp_path / "corpus_c"
    synthetic.generate(_config(out, seed=4, videos=1, workers=1), progress=False)
    assert (out / "annotations.json").read_bytes() != (corpus / "annotations.json").read_bytes()
    frames, samples, _ = _decode(out / "videos" / "v_000000.mp4")
    frames_a, samples_a, _ = decoded["v_000000"]
    n, m = min(len(frames), len(frames_a)), min(samples.size, samples_a.size)
    assert not np.array_equal(frames[:n], frames_a[:n])
    assert not np.array_equal(samples[:m], samples_a[:m])


def test_summarize_rejects_a_directory_without_annotations(tmp_path):
    with pytest.raises(FileNotFoundError):
        synthetic.summarize(tmp_path)
