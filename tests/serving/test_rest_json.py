"""TF Serving's REST JSON rules: both forms, b64, the server's response shapes and its errors."""

import base64
import json

import numpy as np
import pytest
import tensorflow as tf

from serving import export_base, rest_json
from tests.serving.tiny_module import FEATURES, PREFIX, WORDS, TinyModule, in_memory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    module = TinyModule()
    path = export_base.export(module, str(tmp_path_factory.mktemp("export") / "tiny"))
    return module, tf.saved_model.load(path)


def _round_trip(loaded, body):
    # Through JSON text both ways, as on the wire: nothing numpy may survive by accident.
    return json.loads(json.dumps(rest_json.predict_json(loaded, json.loads(json.dumps(body)))))


@pytest.mark.parametrize("form", ["columnar", "row"])
def test_both_forms_give_the_in_memory_outputs(tiny, form):
    module, loaded = tiny
    want = in_memory(module)
    body = rest_json.encode_request({"features": FEATURES, "words": WORDS}, form=form)
    response = _round_trip(loaded, body)
    got = rest_json.decode_response(response, form)
    assert set(got) == {"logits", "tagged_bytes"}
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
    assert got["tagged_bytes"].tolist() == want["tagged_bytes"].tolist() == [PREFIX + w for w in WORDS]


def test_the_response_has_the_servers_shape(tiny):
    _, loaded = tiny
    inputs = {"features": FEATURES, "words": WORDS}
    rows = _round_trip(loaded, rest_json.encode_request(inputs, form="row"))
    # Several outputs: one dict per instance; the _bytes output as b64.
    assert list(rows) == ["predictions"] and len(rows["predictions"]) == 2
    assert all(set(p) == {"logits", "tagged_bytes"} for p in rows["predictions"])
    assert rows["predictions"][1]["tagged_bytes"] == {"b64": base64.b64encode(b"tag:text").decode()}
    assert len(rows["predictions"][0]["logits"]) == 2
    columns = _round_trip(loaded, rest_json.encode_request(inputs, signature_name="serving_default"))
    assert list(columns) == ["outputs"] and set(columns["outputs"]) == {"logits", "tagged_bytes"}
    assert np.shape(columns["outputs"]["logits"]) == (2, 2)


def test_a_single_input_and_output_go_unnamed(tiny):
    module, loaded = tiny
    want = module.model(FEATURES).numpy()
    # One input: bare values are allowed; one output: the response leaves its name out.
    rows = _round_trip(loaded, {"signature_name": "logits_only", "instances": FEATURES.tolist()})
    assert np.shape(rows["predictions"]) == (2, 2)
    np.testing.assert_allclose(rows["predictions"], want, rtol=1e-6)
    columns = _round_trip(loaded, {"signature_name": "logits_only", "inputs": FEATURES.tolist()})
    np.testing.assert_allclose(columns["outputs"], want, rtol=1e-6)
    got = rest_json.decode_response(columns, "columnar", output_name="logits")
    np.testing.assert_allclose(got["logits"], want, rtol=1e-6)
    assert set(rest_json.decode_response(rows, "row")) == {"predictions"}


def test_b64_and_text_both_reach_a_string_input(tiny):
    _, loaded = tiny
    body = rest_json.encode_request({"features": FEATURES, "words": WORDS})
    assert body["inputs"]["words"] == [{"b64": base64.b64encode(w).decode()} for w in WORDS]
    # Text is fine for a string input too (sent as UTF-8); a scalar bytes value is one b64 object.
    assert rest_json.encode_request({"w": b"\x00"})["inputs"]["w"] == {"b64": "AA=="}
    mixed = {"inputs": {"features": FEATURES.tolist(), "words": ["héllo", {"b64": "/wA="}]}}
    got = rest_json.decode_response(_round_trip(loaded, mixed), "columnar")
    assert got["tagged_bytes"].tolist() == [PREFIX + "héllo".encode(), PREFIX + b"\xff\x00"]


def test_encode_request_refuses_what_the_row_form_cannot_send():
    with pytest.raises(ValueError, match=r"same 0-th dimension; got batch sizes \{'a': 2, 'b': 3\}"):
        rest_json.encode_request({"a": np.zeros((2, 3)), "b": np.zeros(3)}, form="row")
    with pytest.raises(ValueError, match=r"Input\(s\) \['t'\] have no batch dimension"):
        rest_json.encode_request({"a": np.zeros((2, 3)), "t": 2.0}, form="row")
    with pytest.raises(ValueError, match=r"Unknown request form 'rows'; valid forms: \['columnar', 'row'\]"):
        rest_json.encode_request({"a": [1.0]}, form="rows")


_GOOD_FEATURES = FEATURES.tolist()
_GOOD_WORDS = ["a", "b"]


@pytest.mark.parametrize(
    "body, message",
    [
        (
            {"inputs": {"features": _GOOD_FEATURES, "words": _GOOD_WORDS, "wrods": ["a"]}},
            r"unknown input\(s\) \['wrods'\]; the signature's inputs are \['features', 'words'\]",
        ),
        ({"inputs": {"features": _GOOD_FEATURES}}, r"missing input\(s\) \['words'\]"),
        (
            {"inputs": {"features": [["1", "2", "3"]], "words": ["a"]}},
            r"Input 'features' is float32; expected a number",
        ),
        ({"inputs": {"features": _GOOD_FEATURES, "words": [1, 2]}}, r"Input 'words' is a string tensor"),
        (
            {"instances": [{"features": [1.0, 2.0, 3.0], "words": "a"}, {"features": [1.0, 2.0], "words": "b"}]},
            r"Input 'features': instances\[1\] has shape \[2\] but the first has \[3\]",
        ),
        (
            {"instances": [{"features": [1.0, 2.0, 3.0], "words": "a"}, {"features": [1.0, 2.0, 3.0]}]},
            r"instances\[1\]: missing input\(s\) \['words'\]",
        ),
        (
            {"inputs": {"features": [[1.0, 2.0], [3.0]], "words": _GOOD_WORDS}},
            r"Input 'features': element 1 has shape \[1\] but the first has \[2\]; lists must not be ragged",
        ),
        (
            {"inputs": {"features": [[1.0, 2.0]], "words": ["a"]}},
            r"Input 'features': shape \[1, 2\] does not match the signature's \[None, 3\]",
        ),
        (
            {"inputs": {"features": _GOOD_FEATURES, "words": [{"b64": "not base64!"}]}},
            r"Input 'words': 'not base64!' is not valid base64",
        ),
        ({"signature_name": "nope", "inputs": {}}, r"'nope' not found .*\['logits_only', 'serving_default'\]"),
        ({"inputs": {}, "instances": []}, r"exactly one of 'instances' .* got both"),
        ({"inputs": [[1.0, 2.0, 3.0]]}, r"bare value, but the signature has inputs \['features', 'words'\]"),
    ],
    ids=[
        "unknown-input",
        "missing-input",
        "string-for-float",
        "number-for-string",
        "uneven-row-batch",
        "row-missing-input",
        "ragged",
        "shape",
        "bad-b64",
        "unknown-signature",
        "both-forms",
        "bare-for-two-inputs",
    ],
)
def test_bad_requests_raise_what_the_server_answers(tiny, body, message):
    _, loaded = tiny
    with pytest.raises(rest_json.ServingJSONError, match=message) as caught:
        rest_json.predict_json(loaded, body)
    assert caught.value.to_json() == {"error": str(caught.value)}


def test_an_error_body_decodes_to_the_servers_message():
    with pytest.raises(rest_json.ServingJSONError, match=r"^Input 'x': bad$"):
        rest_json.decode_response({"error": "Input 'x': bad"}, "row")
    with pytest.raises(ValueError, match=r"A columnar response holds 'outputs'; got \['predictions'\]"):
        rest_json.decode_response({"predictions": []}, "columnar")


def test_the_audio_encoder_export_through_the_json_rules(tmp_path):
    from avalign import audio
    from avalign.audio import AudioConfig
    from serving import audio_encoder
    from trainer.retrieval.config import RetrievalModelConfig
    from trainer.retrieval.model import audio_encoder_model, build_model

    small = dict(audio_widths=[8, 8, 8, 8], first_conv_channels=8, embedding_dim=8, visual_2d_dim=8, visual_3d_dim=4)
    model = build_model(RetrievalModelConfig(**small))
    path = audio_encoder.export_audio_encoder(model, AudioConfig(), str(tmp_path / "audio_encoder"))
    loaded = tf.saved_model.load(path)
    wave = np.random.default_rng(1).normal(scale=0.1, size=(2, 4000)).astype("float32")
    log_mel = audio.log_mel(tf.constant(wave))
    want = audio_encoder_model(model)(
        {"audio": log_mel, "audio_length": tf.fill([2], log_mel.shape[1])}, training=False
    )
    for form in ("row", "columnar"):
        body = rest_json.encode_request({"waveforms": wave}, form=form)
        got = rest_json.decode_response(_round_trip(loaded, body), form)
        assert set(got) == {"frame_embeddings", "frame_mask", "pooled_embedding"}
        for key in got:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)
    lengths = [log_mel.shape[1], 10]
    body = rest_json.encode_request(
        {"log_mel": log_mel.numpy(), "lengths": np.array(lengths, "int32")}, "embed_log_mel"
    )
    got = rest_json.decode_response(_round_trip(loaded, body), "columnar")
    want = audio_encoder_model(model)({"audio": log_mel, "audio_length": tf.constant(lengths)}, training=False)
    np.testing.assert_allclose(got["pooled_embedding"], want["pooled_embedding"], rtol=1e-4, atol=1e-5)
