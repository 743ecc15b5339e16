"""A real TF Serving model server on our exports and on serving/deploy/models.config, called through serving.client."""

import contextlib
import pathlib
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import client as client_lib
from serving import export_base
from tests.serving.tiny_module import FEATURES, WORDS, TinyModule, in_memory

SERVER = shutil.which("tensorflow_model_server")
MODELS_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "serving" / "deploy" / "models.config"
# Bounds the wait for a model to load; the server is polled, so a fast load is a short wait.
LOAD_TIMEOUT_S = 120.0

pytestmark = pytest.mark.skipif(
    SERVER is None,
    reason=(
        "tensorflow_model_server is not on PATH. Install TF Serving 2.17.1 (the apt package tensorflow-model-server "
        "from https://storage.googleapis.com/tensorflow-serving-apt, or copy /usr/bin/tensorflow_model_server out of "
        "the tensorflow/serving:2.17.1 image), then run .venv/bin/pytest tests/serving/test_model_server.py"
    ),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _model_server(log_path: pathlib.Path, *flags: str):
    """Runs tensorflow_model_server with `flags` on free ports; yields its REST URL; stops it on exit."""
    rest_port = _free_port()
    args = [SERVER, f"--port={_free_port()}", f"--rest_api_port={rest_port}", *flags]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, f"http://127.0.0.1:{rest_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_available(process: subprocess.Popen, url: str, model: str, log_path: pathlib.Path) -> dict:
    """Polls the model's status until every version is AVAILABLE; fails with the server's log otherwise."""
    client = client_lib.ServingClient(url, model, timeout=2.0, retries=0)
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"tensorflow_model_server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            status = client.status()
        except client_lib.ServingError as err:
            # Connection refused until the models of the config have loaded, then 200.
            last = err
        else:
            states = [v["state"] for v in status["model_version_status"]]
            if states and all(s == "AVAILABLE" for s in states):
                return status
            last = status
        time.sleep(0.25)
    pytest.fail(f"{model} not AVAILABLE within {LOAD_TIMEOUT_S}s (last: {last}):\n{log_path.read_text()[-4000:]}")


def test_the_server_gives_the_in_memory_outputs(tmp_path):
    module = TinyModule()
    base = tmp_path / "tiny"
    export_base.export(module, str(base))
    want = in_memory(module)
    log_path = tmp_path / "server.log"
    with _model_server(log_path, "--model_name=tiny", f"--model_base_path={base}") as (process, url):
        status = _wait_available(process, url, "tiny", log_path)
        assert [v["version"] for v in status["model_version_status"]] == ["1"]
        client = client_lib.ServingClient(url, "tiny")
        for form in ("columnar", "row"):
            got = client.predict({"features": FEATURES, "words": WORDS}, form=form)
            np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
            assert got["tagged_bytes"].tolist() == want["tagged_bytes"].tolist(), form
        got = client.predict({"features": FEATURES}, signature_name="logits_only", output_name="logits")
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
        with pytest.raises(client_lib.ServingError) as caught:
            client_lib.ServingClient(url, "tiny", version=2, retries=0).status()
        assert caught.value.status == 404


def test_the_deploy_model_config_serves_each_model_and_label(tmp_path):
    config = text_format.Parse(MODELS_CONFIG.read_text(), model_server_config_pb2.ModelServerConfig())
    want = {}
    for model in config.model_config_list.config:
        # The config's own names, versions and labels; only the base moves to this test's directory.
        model.base_path = str(tmp_path / model.name)
        outputs = {}
        for seed in range(max(model.model_version_policy.specific.versions)):
            module = TinyModule(seed)
            version = int(pathlib.Path(export_base.export(module, model.base_path)).name)
            outputs[version] = in_memory(module)
        want[model.name] = outputs
    config_path = tmp_path / "models.config"
    config_path.write_text(text_format.MessageToString(config))
    log_path = tmp_path / "server.log"
    with _model_server(log_path, f"--model_config_file={config_path}") as (process, url):
        for model in config.model_config_list.config:
            status = _wait_available(process, url, model.name, log_path)
            served = sorted(int(v["version"]) for v in status["model_version_status"])
            assert served == sorted(model.model_version_policy.specific.versions), model.name
            for label, version in sorted(model.version_labels.items()):
                got = client_lib.ServingClient(url, model.name, label=label).predict(
                    {"features": FEATURES, "words": WORDS}
                )
                np.testing.assert_allclose(got["logits"], want[model.name][version]["logits"], rtol=1e-6)
