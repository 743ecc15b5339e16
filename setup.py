"""avalign: audio-visual caption localization and retrieval on instructional videos."""

import setuptools

with open("requirements.txt", encoding="utf-8") as f:
    REQUIRED = [line.strip() for line in f if line.strip() and not line.startswith("#")]

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
    install_requires=REQUIRED,
)
