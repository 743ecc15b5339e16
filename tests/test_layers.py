"""Imports run one way: each layer imports only from the layers below it (and itself)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Each top-level package and what it may import of ours. `corpus` (the built-in corpus
# generator) and `preprocessing` (the Beam job) sit side by side on the core: neither needs
# the other, the demo joins them.
CORE = {"avalign"}
ALLOWED = {
    "avalign": CORE,
    "corpus": CORE | {"corpus"},
    "preprocessing": CORE | {"preprocessing"},
    "trainer": CORE | {"preprocessing", "trainer"},
    "serving": CORE | {"preprocessing", "trainer", "serving"},
    "apps": CORE | {"corpus", "preprocessing", "trainer", "serving", "apps"},
    "bench": CORE | {"corpus", "preprocessing", "trainer", "serving", "bench"},
    "kubeflow": CORE | {"corpus", "preprocessing", "trainer", "serving", "apps", "kubeflow"},
}
OURS = set(ALLOWED)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file, at any depth (lazy imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _layer_files():
    for layer in sorted(ALLOWED):
        for path in sorted((ROOT / layer).rglob("*.py")):
            yield layer, path


def test_every_package_is_in_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= OURS, f"packages without a declared layer: {sorted(packages - OURS)}"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_from_below(layer):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {package}"
        for this, path in _layer_files()
        if this == layer
        for line, package in _imports(path)
        if package in OURS and package not in ALLOWED[layer]
    ]
    assert not wrong, f"{layer} may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(wrong)


def test_the_checker_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from serving import audio_encoder\n    import trainer.task\n")
    assert _imports(probe) == [(2, "serving"), (3, "trainer")]
