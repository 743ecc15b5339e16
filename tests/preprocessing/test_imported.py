"""Tests of pre-extracted feature sources (npy, HDF5) and their resampling to a stream's rate."""

import pickle
import re

import h5py
import numpy as np
import pytest

from preprocessing import imported


def _features(rows, dim=6, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


# --------------------------------------------------------------------------------------
# npy directories.


@pytest.fixture()
def npy_dir(tmp_path):
    np.save(tmp_path / "v_good.npy", _features(10))
    np.save(tmp_path / "v_half.npy", _features(4).astype(np.float16))
    np.save(tmp_path / "v_flat.npy", np.zeros(8, np.float32))
    nan = _features(5)
    nan[2, 3] = np.nan
    np.save(tmp_path / "v_nan.npy", nan)
    np.save(tmp_path / "v_empty.npy", np.zeros((0, 6), np.float32))
    (tmp_path / "v_text.npy").write_text("not numpy")
    np.save(tmp_path / "c3d_v_good.npy", _features(3, seed=1))
    return tmp_path


def test_npy_load(npy_dir):
    source = imported.NpyFeatureSource(str(npy_dir), rate=2.0)
    out = source.load("v_good")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, _features(10))
    half = source.load("v_half")
    assert half.dtype == np.float32 and half.shape == (4, 6)
    assert "v_good" in source and "v_missing" not in source
    assert source.rate == 2.0 and str(npy_dir) in source.version


def test_npy_pattern(npy_dir):
    source = imported.NpyFeatureSource(str(npy_dir), rate=1.0, pattern="c3d_{video_id}.npy")
    np.testing.assert_array_equal(source.load("v_good"), _features(3, seed=1))
    with pytest.raises(ValueError, match=r"must contain '\{video_id\}', got 'features.npy'"):
        imported.NpyFeatureSource(str(npy_dir), rate=1.0, pattern="features.npy")


@pytest.mark.parametrize(
    "video_id, error, message",
    [
        ("v_missing", KeyError, "'v_missing'.*v_missing.npy does not exist"),
        ("v_flat", ValueError, r"'v_flat'.*must be 2-D \(N, dim\), got shape \(8,\)"),
        ("v_nan", ValueError, "'v_nan'.*1 NaN or Inf"),
        ("v_empty", ValueError, r"'v_empty'.*empty: shape \(0, 6\)"),
        ("v_text", ValueError, "'v_text'.*not a readable .npy file"),
    ],
)
def test_npy_errors(npy_dir, video_id, error, message):
    source = imported.NpyFeatureSource(str(npy_dir), rate=2.0)
    with pytest.raises(error, match=message):
        source.load(video_id)


def test_npy_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        imported.NpyFeatureSource(str(tmp_path / "absent"), rate=1.0)
    with pytest.raises(ValueError, match="rate must be a finite number > 0, got 0"):
        imported.NpyFeatureSource(str(tmp_path), rate=0)


@pytest.mark.parametrize(
    "video_id, detail",
    [
        ("../secret", "it resolves to .*secret.npy', outside"),
        ("sub/../../secret", "it resolves to .*secret.npy', outside"),
        ("{root}/secret", "it is absolute"),
        ("v_link", "it resolves to .*secret.npy', outside"),
    ],
)
def test_npy_paths_are_confined_to_the_directory(tmp_path, video_id, detail):
    features_dir = tmp_path / "features"
    features_dir.mkdir()
    np.save(tmp_path / "secret.npy", _features(3))
    (features_dir / "v_link.npy").symlink_to(tmp_path / "secret.npy")
    np.save(features_dir / "v_good.npy", _features(2))
    source = imported.NpyFeatureSource(str(features_dir), rate=1.0)
    video_id = video_id.format(root=tmp_path)
    message = (
        f"Feature file {re.escape(repr(video_id + '.npy'))} of video {re.escape(repr(video_id))} "
        f"is not a file inside feature directory {re.escape(repr(str(features_dir)))}: {detail}"
    )
    with pytest.raises(ValueError, match=message):
        source.load(video_id)
    with pytest.raises(ValueError, match=message):
        source.__contains__(video_id)
    np.testing.assert_array_equal(source.load("v_good"), _features(2))


def test_npy_pattern_cannot_leave_the_directory(tmp_path):
    (tmp_path / "features").mkdir()
    np.save(tmp_path / "v.npy", _features(2))
    source = imported.NpyFeatureSource(str(tmp_path / "features"), rate=1.0, pattern="../{video_id}.npy")
    with pytest.raises(ValueError, match=r"Feature file '\.\./v\.npy' of video 'v' is not a file inside"):
        source.load("v")


def test_npy_symlinked_directory_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    np.save(tmp_path / "real" / "v.npy", _features(2))
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    source = imported.NpyFeatureSource(str(tmp_path / "linked"), rate=1.0)
    np.testing.assert_array_equal(source.load("v"), _features(2))


# --------------------------------------------------------------------------------------
# HDF5 files, ActivityNet C3D style.


@pytest.fixture()
def h5_path(tmp_path):
    path = tmp_path / "c3d.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v_plain", data=_features(7))
        f.create_group("v_group").create_dataset("c3d_features", data=_features(5, dim=4).astype(np.float64))
        two = f.create_group("v_two")
        two.create_dataset("c3d_features", data=_features(3, dim=4))
        two.create_dataset("fc6", data=_features(3, dim=2))
        f.create_dataset("v_cube", data=np.zeros((2, 3, 4), np.float32))
        inf = _features(4)
        inf[0, 0] = np.inf
        f.create_group("v_inf").create_dataset("c3d_features", data=inf)
    return str(path)


def test_hdf5_load(h5_path):
    source = imported.Hdf5FeatureSource(h5_path, rate=1.5)
    np.testing.assert_array_equal(source.load("v_plain"), _features(7))
    group = source.load("v_group")  # the group's only dataset
    assert group.dtype == np.float32
    np.testing.assert_allclose(group, _features(5, dim=4), rtol=1e-6)
    assert "v_plain" in source and "v_nope" not in source
    keyed = imported.Hdf5FeatureSource(h5_path, rate=1.5, dataset_key="fc6")
    np.testing.assert_array_equal(keyed.load("v_two"), _features(3, dim=2))
    assert keyed.version.endswith("c3d.hdf5[fc6]")
    source.close()
    np.testing.assert_array_equal(source.load("v_plain"), _features(7))  # reopens


def test_hdf5_errors(h5_path):
    source = imported.Hdf5FeatureSource(h5_path, rate=1.0)
    with pytest.raises(KeyError, match=f"'v_nope' in {re.escape(h5_path)}"):
        source.load("v_nope")
    with pytest.raises(ValueError, match=r"'v_two'.*datasets \['c3d_features', 'fc6'\]; set dataset_key"):
        source.load("v_two")
    with pytest.raises(ValueError, match=r"'v_cube'.*got shape \(2, 3, 4\)"):
        source.load("v_cube")
    with pytest.raises(ValueError, match="'v_inf'.*1 NaN or Inf"):
        source.load("v_inf")
    keyed = imported.Hdf5FeatureSource(h5_path, rate=1.0, dataset_key="fc7")
    with pytest.raises(KeyError, match=r"'v_group'.*no dataset 'fc7'; it has \['c3d_features'\]"):
        keyed.load("v_group")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        imported.Hdf5FeatureSource(h5_path + ".missing.h5", rate=1.0)


def test_hdf5_pickles_without_its_handle(h5_path):
    source = imported.Hdf5FeatureSource(h5_path, rate=1.0, dataset_key="c3d_features")
    source.load("v_group")  # opens the file in this process
    clone = pickle.loads(pickle.dumps(source))
    assert clone._file is None
    np.testing.assert_array_equal(clone.load("v_group"), source.load("v_group"))
    assert clone.rate == 1.0 and clone.version == source.version


# --------------------------------------------------------------------------------------
# Resampling to the stream's rate.


def test_resample_same_rate_is_identity():
    f = _features(8)
    np.testing.assert_array_equal(imported.resample_features(f, 2.0, 2.0, duration=4.0), f)
    np.testing.assert_array_equal(imported.resample_features(f, 2.0, 2.0, duration=4.0, method="nearest"), f)


def test_resample_mean_pools_when_downsampling():
    f = np.arange(12, dtype=np.float32)[:, None] * np.array([[1.0, -1.0]], np.float32)  # 4 vectors/s, 3 s
    out = imported.resample_features(f, 4.0, 2.0, duration=3.0)
    # Output i covers source j in [2i - 1, 2i + 1): {0}, {1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10}.
    np.testing.assert_allclose(out[:, 0], [0.0, 1.5, 3.5, 5.5, 7.5, 9.5])
    np.testing.assert_allclose(out[:, 1], -out[:, 0])
    nearest = imported.resample_features(f, 4.0, 2.0, duration=3.0, method="nearest")
    np.testing.assert_array_equal(nearest[:, 0], [0, 2, 4, 6, 8, 10])


def test_resample_upsampling_and_length():
    f = np.array([[0.0], [10.0], [20.0]], np.float32)  # 1 vector/s
    out = imported.resample_features(f, 1.0, 4.0, duration=2.0)
    # Times 0, .25, ..., 1.75: the window of 0 and 1 holds a source vector, others take the nearest.
    np.testing.assert_array_equal(out[:, 0], [0, 0, 10, 10, 10, 10, 20, 20])
    # A video longer than its features repeats the last vector; N follows the duration.
    long = imported.resample_features(f, 1.0, 2.0, duration=5.2, method="nearest")
    assert long.shape == (11, 1)
    np.testing.assert_array_equal(long[:, 0], [0, 10, 10, 20, 20, 20, 20, 20, 20, 20, 20])
    assert imported.resample_features(f, 1.0, 2.0, duration=0.0).shape == (1, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "cubic"}, "Unknown resample method 'cubic'"),
        ({"source_rate": 0.0}, "source_rate must be a finite number > 0, got 0.0"),
        ({"target_rate": float("nan")}, "target_rate must be a finite number > 0, got nan"),
        ({"duration": -1.0}, "duration must be a finite number >= 0, got -1.0"),
        ({"features": np.zeros(5, np.float32)}, r"2-D \(N, dim\) matrix, got shape \(5,\)"),
    ],
)
def test_resample_errors(kwargs, message):
    args = {"features": _features(4), "source_rate": 1.0, "target_rate": 2.0, "duration": 2.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        imported.resample_features(**args)
