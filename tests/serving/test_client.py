"""The TF Serving REST client against a local HTTP server that answers with TF Serving's JSON rules."""

import base64
import http.server
import json
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from serving import client as client_lib
from serving import export_base, rest_json
from tests.serving.tiny_module import FEATURES, PREFIX, WORDS, TinyModule, in_memory

MODEL = "tiny"
ROOT = pathlib.Path(__file__).resolve().parents[2]
# TF Serving's URL grammar: /v1/models/<name>[/versions/<v>|/labels/<l>][:predict|/metadata]
_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?(?P<verb>:predict|/metadata)?$"
)
_DTYPES = {"float32": "DT_FLOAT", "string": "DT_STRING", "int32": "DT_INT32"}


class FakeServing(http.server.ThreadingHTTPServer):
    """Version 1 of one model, served like TF Serving; `script` answers the next requests first, `calls` counts."""

    daemon_threads = True

    def __init__(self, loaded, meta):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.loaded, self.meta = loaded, meta
        self.labels = {"stable": "1"}
        self.script: list = []
        self.calls: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeServing

    def log_message(self, *args):
        pass  # keep pytest's output to the test's own

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def _send(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, method: str) -> None:
        server = self.server
        server.calls.append((method, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if server.script:
            scripted = server.script.pop(0)
            if scripted[0] == "sleep":
                # Past the client's timeout; then hang up without an answer.
                time.sleep(scripted[1])
                return
            return self._send(*scripted)
        route = _ROUTE.match(self.path)
        if not route or route["name"] != MODEL:
            name = route["name"] if route else self.path
            return self._send(404, {"error": f"Servable not found for request: Latest({name})"})
        version = route["version"] or server.labels.get(route["label"] or "", "1")
        if version != "1" or (route["label"] and route["label"] not in server.labels):
            return self._send(404, {"error": f"Servable not found for request: Specific({MODEL}, {version})"})
        verb = route["verb"]
        if verb == ":predict" and method == "POST":
            try:
                return self._send(200, rest_json.predict_json(server.loaded, json.loads(raw)))
            except rest_json.ServingJSONError as err:
                return self._send(400, err.to_json())
        if verb == "/metadata" and method == "GET":
            return self._send(200, _metadata(server.meta))
        if verb is None and method == "GET":
            ok = {"error_code": "OK", "error_message": ""}
            return self._send(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]})
        self._send(400, {"error": f"Malformed request: {method} {self.path}"})


def _metadata(meta: dict) -> dict:
    """A subset of TF Serving's metadata response, from what `export_base` recorded."""

    def info(spec):
        dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec["shape"]]
        return {"dtype": _DTYPES[spec["dtype"]], "tensor_shape": {"dim": dims, "unknown_rank": False}}

    defs = {
        key: {
            "inputs": {name: info(spec) for name, spec in signature["inputs"].items()},
            "outputs": {name: info(spec) for name, spec in signature["outputs"].items()},
            "method_name": "tensorflow/serving/predict",
        }
        for key, signature in meta["signatures"].items()
    }
    return {
        "model_spec": {"name": MODEL, "signature_name": "", "version": "1"},
        "metadata": {"signature_def": {"signature_def": defs}},
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    module = TinyModule()
    path = export_base.export(module, str(tmp_path_factory.mktemp("export") / MODEL))
    server = FakeServing(tf.saved_model.load(path), export_base.read_metadata(path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, in_memory(module)
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(served):
    server, _ = served
    server.script.clear()
    server.calls.clear()
    return server


@pytest.mark.parametrize("form", ["columnar", "row"])
def test_predict_gives_the_in_memory_outputs(served, server, form):
    _, want = served
    got = client_lib.ServingClient(server.url, MODEL).predict({"features": FEATURES, "words": WORDS}, form=form)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
    assert got["tagged_bytes"].tolist() == want["tagged_bytes"].tolist()
    assert server.calls == [("POST", f"/v1/models/{MODEL}:predict")]


def test_the_version_or_label_goes_in_the_url(served, server):
    _, want = served
    by_version = client_lib.ServingClient(server.url + "/", MODEL, version=1)
    got = by_version.predict({"features": FEATURES}, signature_name="logits_only", output_name="logits")
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
    client_lib.ServingClient(server.url, MODEL, label="stable").status()
    assert server.calls == [
        ("POST", f"/v1/models/{MODEL}/versions/1:predict"),
        ("GET", f"/v1/models/{MODEL}/labels/stable"),
    ]
    with pytest.raises(ValueError, match=r"Give a version \(1\) or a label \('stable'\), not both"):
        client_lib.ServingClient(server.url, MODEL, version=1, label="stable")
    with pytest.raises(ValueError, match=r"url 'localhost:8501' is not an http\(s\) address"):
        client_lib.ServingClient("localhost:8501", MODEL)


def test_status_and_metadata(server):
    client = client_lib.ServingClient(server.url, MODEL, version=1)
    assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    signature_def = client.metadata()["metadata"]["signature_def"]["signature_def"]
    assert sorted(signature_def) == ["logits_only", "serving_default"]
    assert signature_def["serving_default"]["inputs"]["words"]["dtype"] == "DT_STRING"
    assert server.calls[-1] == ("GET", f"/v1/models/{MODEL}/versions/1/metadata")


def test_the_servers_error_surfaces_verbatim_and_a_4xx_is_not_retried(served, server):
    loaded = served[0].loaded
    body = {"inputs": {"features": FEATURES.tolist()}}
    with pytest.raises(rest_json.ServingJSONError) as expected:
        rest_json.predict_json(loaded, body)
    client = client_lib.ServingClient(server.url, MODEL, retries=3, backoff=0.01)
    with pytest.raises(client_lib.ServingError) as caught:
        client.predict({"features": FEATURES})
    url = f"{server.url}/v1/models/{MODEL}:predict"
    assert str(caught.value) == f"POST {url} -> HTTP 400: {expected.value}"
    assert (caught.value.status, caught.value.url, caught.value.server_message) == (400, url, str(expected.value))
    assert len(server.calls) == 1
    server.calls.clear()
    with pytest.raises(client_lib.ServingError, match=r"HTTP 404: Servable not found for request: Specific\(tiny, 7\)"):
        client_lib.ServingClient(server.url, MODEL, version=7, backoff=0.01).status()
    assert len(server.calls) == 1


def test_503_twice_then_200_is_retried(served, server):
    _, want = served
    unavailable = (503, {"error": "Servable not ready"})
    server.script += [unavailable, unavailable]
    client = client_lib.ServingClient(server.url, MODEL, retries=3, backoff=0.01)
    got = client.predict({"features": FEATURES, "words": WORDS})
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
    assert len(server.calls) == 3
    # Out of retries: the last 503 is the error.
    server.calls.clear()
    server.script += [unavailable, (502, {"error": "Bad gateway"})]
    with pytest.raises(client_lib.ServingError, match=r"-> HTTP 502: Bad gateway$") as caught:
        client_lib.ServingClient(server.url, MODEL, retries=1, backoff=0.01).status()
    assert caught.value.status == 502 and len(server.calls) == 2


def test_a_server_slower_than_the_timeout_raises_after_the_retries(server):
    server.script += [("sleep", 0.6), ("sleep", 0.6)]
    client = client_lib.ServingClient(server.url, MODEL, timeout=0.2, retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no response within 0.2s, after 2 tries") as caught:
        client.predict({"features": FEATURES, "words": WORDS})
    assert isinstance(caught.value, client_lib.ServingTimeoutError) and caught.value.status is None
    assert len(server.calls) == 2 and time.monotonic() - start < 1.0


def test_no_server_is_a_connection_error_after_the_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now: every try is refused.
    client = client_lib.ServingClient(f"http://127.0.0.1:{port}", MODEL, timeout=0.5, retries=2, backoff=0.01)
    with pytest.raises(client_lib.ServingError, match=r"-> no connection \(.*\), after 3 tries") as caught:
        client.status()
    assert not isinstance(caught.value, TimeoutError)


def test_cli_status_and_predict(served, server, capsys, tmp_path):
    _, want = served
    assert client_lib.main(["--url", server.url, "--model", MODEL, "--version", "1", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["model_version_status"][0]["version"] == "1"
    np.save(tmp_path / "features.npy", FEATURES)
    words = json.dumps([{"b64": base64.b64encode(w).decode()} for w in WORDS])
    argv = ["--url", server.url, "--model", MODEL, "predict", "--form", "row"]
    argv += ["--input", f"features={tmp_path / 'features.npy'}", "--input", f"words={words}"]
    assert client_lib.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(printed["logits"], want["logits"], rtol=1e-6)
    assert [base64.b64decode(v["b64"]) for v in printed["tagged_bytes"]] == [PREFIX + w for w in WORDS]


def test_cli_server_error_exits_1_printing_it_verbatim(served, server, capsys):
    argv = ["--url", server.url, "--model", MODEL, "predict", "--input", f"features={json.dumps(FEATURES.tolist())}"]
    assert client_lib.main(argv) == 1
    err = capsys.readouterr().err
    assert "HTTP 400: 'inputs': missing input(s) ['words']; the signature's inputs are ['features', 'words']." in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["predict", "--input", "features"], r"argument --input: 'features' is not NAME=PATH.npy or NAME=JSON"),
        (["predict", "--input", "features=[1.0,"], r"argument --input: 'features=\[1.0,': the value is neither"),
        (["predict", "--input", "f=/no/such.npy"], r"argument --input: 'f=/no/such.npy': no file '/no/such.npy'"),
        (["predict"], r"argument --input: predict needs at least one --input"),
        (["--version", "1", "--label", "x", "status"], r"argument --label: not allowed with argument --version"),
        (["predict", "--form", "row", "--input", "a=[1, 2]", "--input", "b=[1]"], r"argument --input: .*same 0-th"),
    ],
    ids=["no-equals", "bad-json", "no-file", "no-input", "version-and-label", "uneven-row"],
)
def test_cli_bad_arguments_exit_2_naming_the_argument(server, capsys, extra, message):
    with pytest.raises(SystemExit) as caught:
        client_lib.main(["--url", server.url, "--model", MODEL, *extra])
    assert caught.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert server.calls == []


def test_the_client_runs_without_tensorflow():
    # A fresh interpreter: this one has imported TensorFlow already. The client starts in a blink without it.
    probe = "import sys, serving.client; assert 'tensorflow' not in sys.modules, 'serving.client imports tensorflow'"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
