"""The deployment files agree: model config (parsed by TF Serving's own proto), Kubernetes, KServe, client, pins."""

import pathlib
import re
import urllib.parse

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import client as client_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "serving" / "deploy"
MODELS = {"localizer", "retriever"}
# What each manifest must be: kinds Kubernetes (and KServe's CRD) would accept under these apiVersions.
KINDS = {
    "kustomization.yaml": [("kustomize.config.k8s.io/v1beta1", "Kustomization")],
    "k8s/pvc.yaml": [("v1", "PersistentVolumeClaim")],
    "k8s/deployment.yaml": [("apps/v1", "Deployment")],
    "k8s/service.yaml": [("v1", "Service")],
    "k8s/kserve/localizer.yaml": [("serving.kserve.io/v1beta1", "InferenceService")],
    "k8s/kserve/retriever.yaml": [("serving.kserve.io/v1beta1", "InferenceService")],
}


def _docs() -> dict[str, list[dict]]:
    return {
        path.relative_to(DEPLOY).as_posix(): list(yaml.safe_load_all(path.read_text()))
        for path in sorted(DEPLOY.rglob("*.yaml"))
    }


def _one(name: str) -> dict:
    (doc,) = _docs()[name]
    return doc


def _model_config() -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse((DEPLOY / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())


def _tensorflow_pin() -> str:
    pins = re.findall(r"^tensorflow==(\S+)$", (ROOT / "requirements.txt").read_text(), flags=re.MULTILINE)
    assert len(pins) == 1, f"expected one tensorflow==X pin in requirements.txt; found {pins}"
    return pins[0]


def _container() -> dict:
    (container,) = _one("k8s/deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return container


def _flags(container: dict) -> dict[str, str]:
    flags = {}
    for arg in container["args"]:
        name, sep, value = arg.partition("=")
        assert name.startswith("--") and sep, f"arg {arg!r} is not --flag=value"
        flags[name[2:]] = value
    return flags


def _mount_of(volume_key: str, match) -> tuple[dict, dict]:
    """The pod volume whose `volume_key` source `match`es, and the container's mount of it."""
    pod = _one("k8s/deployment.yaml")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if volume_key in v and match(v[volume_key])]
    (mount,) = [m for m in _container()["volumeMounts"] if m["name"] == volume["name"]]
    return volume, mount


def test_every_manifest_has_the_expected_kind_and_api_version():
    docs = _docs()
    assert sorted(docs) == sorted(KINDS), "a manifest was added or removed: list it in KINDS"
    for name, want in KINDS.items():
        assert [(d["apiVersion"], d["kind"]) for d in docs[name]] == want, name
    # Everything under k8s/ is applied: by the kustomization, or (KServe, an alternative) on its own.
    resources = _one("kustomization.yaml")["resources"]
    assert all((DEPLOY / r).is_file() for r in resources), resources
    assert sorted(resources + [n for n in KINDS if n.startswith("k8s/kserve/")]) == sorted(
        n for n in KINDS if n.startswith("k8s/")
    )


def test_the_model_config_parses_with_tf_servings_proto_and_pins_versions():
    config = _model_config()
    assert config.WhichOneof("config") == "model_config_list"
    models = {m.name: m for m in config.model_config_list.config}
    assert set(models) == MODELS
    for name, model in models.items():
        assert model.model_platform == "tensorflow", name
        # `specific`: a version half-copied onto an object store is never loaded (serving/export_base.py).
        assert model.model_version_policy.WhichOneof("policy_choice") == "specific", name
        versions = set(model.model_version_policy.specific.versions)
        assert versions and all(v > 0 for v in versions), (name, versions)
        assert set(model.version_labels) == {"stable", "canary"}, name
        # TF Serving refuses a label on a version it hasn't loaded, and it loads only the versions named.
        for label, version in model.version_labels.items():
            assert version in versions, f"{name}: label {label!r} -> {version}, not one of the versions {versions}"


def test_the_server_reads_the_model_config_the_configmap_mounts():
    generator = _one("kustomization.yaml")["configMapGenerator"]
    (config_map,) = [g for g in generator if g["name"] == "avalign-serving-config"]
    keys = {f.partition("=")[0]: f.rpartition("=")[2] for f in config_map["files"]}
    assert keys == {"models.config": "models.config"}
    assert (DEPLOY / keys["models.config"]).is_file()
    _, mount = _mount_of("configMap", lambda source: source["name"] == config_map["name"])
    assert mount.get("readOnly") is True
    assert _flags(_container())["model_config_file"] == f"{mount['mountPath']}/models.config"


def test_every_model_lives_under_the_base_the_manifests_mount():
    pvc = _one("k8s/pvc.yaml")
    _, mount = _mount_of("persistentVolumeClaim", lambda source: source["claimName"] == pvc["metadata"]["name"])
    for model in _model_config().model_config_list.config:
        assert model.base_path == f"{mount['mountPath']}/{model.name}", model.name
    # KServe: one InferenceService per model, named as in the config, so the REST paths are the same.
    services = [_one(f"k8s/kserve/{name}.yaml") for name in sorted(MODELS)]
    assert {s["metadata"]["name"] for s in services} == MODELS
    for service in services:
        model = service["spec"]["predictor"]["model"]
        assert model["modelFormat"]["name"] == "tensorflow"
        uri = urllib.parse.urlparse(model["storageUri"])
        assert uri.scheme == "gs" and uri.path.endswith("/" + service["metadata"]["name"]), model["storageUri"]


def test_ports_and_probes_agree_with_the_client():
    # The REST port of the client's own example URL (`--url`'s help), which is TF Serving's default.
    (url_help,) = [a.help for a in client_lib._parser()._actions if a.dest == "url"]
    rest_port = urllib.parse.urlparse(re.search(r"https?://\S+", url_help).group()).port
    assert rest_port == 8501
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "rest": rest_port}
    flags = _flags(container)
    assert (int(flags["port"]), int(flags["rest_api_port"])) == (ports["grpc"], ports["rest"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/v1/models/localizer", "rest"), probe
    service = _one("k8s/service.yaml")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (8500, "grpc"),
        "rest": (rest_port, "rest"),
    }
    deployment = _one("k8s/deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items(), selector
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}


def test_the_image_is_the_tf_serving_release_of_the_pinned_tensorflow():
    pin = _tensorflow_pin()
    image, _, tag = _container()["image"].rpartition(":")
    assert (image, tag) == ("tensorflow/serving", pin)
    for name in sorted(MODELS):
        assert _one(f"k8s/kserve/{name}.yaml")["spec"]["predictor"]["model"]["runtimeVersion"] == pin
