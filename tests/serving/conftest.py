"""Serving test helpers: which ops of a SavedModel's graphs TensorFlow itself doesn't register."""

import json
import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: once tensorflow_io is imported (other tests do), its
# ops are in the registry too, and a graph that TF Serving can't run would pass.
_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    assert "tensorflow_io" not in sys.modules
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(sys.argv[1], "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops, functions = set(), set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            functions.add(fn.signature.name)
            ops.update(node.op for node in fn.node_def)
    # A node that calls a library function names it as its op; that is not an op.
    ops -= functions
    print(json.dumps({"ops": sorted(ops), "unregistered": sorted(o for o in ops if op_def_registry.get(o) is None)}))
    """
)


def graph_ops(saved_model_dir) -> dict:
    """{'ops': op types in the SavedModel's graphs, 'unregistered': those not in core TensorFlow's registry}."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(saved_model_dir)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def core_ops_only():
    """Asserts that every op in a SavedModel's graphs is a core TensorFlow op (TF Serving has no others)."""

    def check(saved_model_dir) -> list[str]:
        found = graph_ops(saved_model_dir)
        assert found["ops"], f"no ops read from {saved_model_dir}"
        assert not found["unregistered"], f"ops TF Serving can't run: {found['unregistered']}"
        return found["ops"]

    return check
