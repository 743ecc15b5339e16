"""avalign: audio-visual caption localization and retrieval on instructional videos."""

import re

import setuptools

# Which pinned requirement (requirements.txt) each role needs. `core` is what every layer
# imports (avalign/: configs, schema, audio front-end); an extra adds a layer's own needs, so
# a Beam worker image (`avalign[beam]`) installs neither kfp nor eSpeak. tests/test_packaging.py
# checks every layer's imports against these lists. Install with the pins applied:
#   pip install -c constraints.txt ".[beam]"
ROLES = {
    "core": ["tensorflow", "tensorflow-io-gcs-filesystem", "pyyaml"],
    "beam": ["apache-beam", "av", "soundfile", "tensorflow-io", "tensorflow-hub", "tf-keras", "keras", "h5py"],
    "corpus": ["av", "soundfile", "espeakng-loader", "tqdm"],
    "train": ["keras", "tensorflow-hub", "tf-keras", "tensorboard", "keras-tuner", "scipy", "matplotlib", "h5py"],
    "kfp": ["kfp"],
    "serving": ["tensorflow-serving-api"],
}


def _pinned(path):
    """requirement name -> the line that pins it, from a requirements file."""
    pins = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                pins[re.split(r"[<>=!~ \[;]", line, maxsplit=1)[0].lower()] = line
    return pins


PINS = _pinned("requirements.txt")
DEV = ["pytest", "pytest-timeout", "pytest-xdist", "librosa", "ruff"]
EXTRAS = {role: [PINS[name] for name in names] for role, names in ROLES.items() if role != "core"}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
EXTRAS["dev"] = EXTRAS["all"] + DEV

setuptools.setup(
    name="avalign",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.13",
    # `kubeflow/` is deliberately not installed: a top-level `kubeflow` package in
    # site-packages would shadow the Kubeflow SDKs' `kubeflow.*` namespace. It is
    # run from the repo root (`python -m kubeflow_pipeline ...` style) instead.
    packages=setuptools.find_packages(
        include=[
            "avalign",
            "avalign.*",
            "corpus",
            "corpus.*",
            "preprocessing",
            "preprocessing.*",
            "trainer",
            "trainer.*",
            "serving",
            "serving.*",
            "apps",
            "apps.*",
        ]
    ),
    install_requires=[PINS[name] for name in ROLES["core"]],
    extras_require=EXTRAS,
    # What a finished training run exports (trainer/exporters.py): found by entry
    # point, so that the trainer never imports the serving layer.
    entry_points={
        "avalign.exporters": [
            "localization = serving.export:export_after_training",
            "retrieval = serving.export:export_after_training",
        ]
    },
)
