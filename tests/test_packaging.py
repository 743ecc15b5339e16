"""Dependencies by role: each layer's third-party imports are in the extras its role installs."""

import ast
import pathlib
import runpy
import sys

import pytest
import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Import name -> distribution that provides it (numpy comes with tensorflow).
DISTRIBUTION = {
    "tensorflow": "tensorflow",
    "numpy": "tensorflow",
    "yaml": "pyyaml",
    "apache_beam": "apache-beam",
    "av": "av",
    "soundfile": "soundfile",
    "h5py": "h5py",
    "keras": "keras",
    "keras_tuner": "keras-tuner",
    "tensorflow_hub": "tensorflow-hub",
    "tensorflow_io": "tensorflow-io",
    "espeakng_loader": "espeakng-loader",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "kfp": "kfp",
    "tensorboard": "tensorboard",
    "tensorflow_serving": "tensorflow-serving-api",
    "librosa": "librosa",
    "scipy": "librosa",
}
OURS = {"avalign", "corpus", "preprocessing", "trainer", "serving", "apps", "bench", "kubeflow", "tests"}
# The roles (setup.py's extras) whose packages each layer may import.
LAYER_ROLES = {
    "avalign": ("core",),
    "preprocessing": ("core", "beam"),
    "corpus": ("core", "corpus"),
    "trainer": ("core", "train"),
    # The predictor decodes videos as the Beam job does, and batch prediction is a Beam job.
    "serving": ("core", "train", "beam", "serving"),
    "apps": ("core", "all"),
    "bench": ("core", "dev"),
}


@pytest.fixture(scope="module")
def setup_kwargs():
    captured = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    mp.chdir(ROOT)
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        mp.undo()
    return captured


def _names(requirements) -> set[str]:
    return {r.split("==")[0].split(">")[0].split("<")[0].strip().lower() for r in requirements}


def _role_names(kwargs) -> dict[str, set[str]]:
    roles = {role: _names(reqs) for role, reqs in kwargs["extras_require"].items()}
    roles["core"] = _names(kwargs["install_requires"])
    return roles


def _third_party_imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in OURS and m != "__future__"}


def test_every_pinned_requirement_has_a_role(setup_kwargs):
    pinned = _names(
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip() and not line.startswith("-")
    )
    roles = _role_names(setup_kwargs)
    assert pinned == roles["core"] | _names(setup_kwargs["extras_require"]["all"])
    assert all("==" in r for r in setup_kwargs["install_requires"] if not r.startswith("pyyaml"))


def test_a_beam_worker_installs_neither_kfp_nor_espeak(setup_kwargs):
    roles = _role_names(setup_kwargs)
    assert not roles["beam"] & {"kfp", "espeakng-loader", "keras-tuner", "matplotlib"}
    assert not roles["corpus"] & {"apache-beam", "kfp"}
    assert not roles["core"] & {"apache-beam", "kfp", "espeakng-loader", "keras"}


@pytest.mark.parametrize("layer", sorted(LAYER_ROLES))
def test_each_layer_imports_only_what_its_roles_install(setup_kwargs, layer):
    roles = _role_names(setup_kwargs)
    allowed = set().union(*(roles[r] for r in LAYER_ROLES[layer]))
    wrong = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for module in sorted(_third_party_imports(path)):
            dist = DISTRIBUTION.get(module)
            if dist is None:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}: add it to DISTRIBUTION and a role")
            elif dist not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {module} ({dist}), not in {LAYER_ROLES[layer]}")
    assert not wrong, "\n".join(wrong)
