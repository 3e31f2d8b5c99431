"""gRPC serving with the real clients: TF Serving's own stubs and ``tritonclient.grpc``.

Every answer is compared with the REST API's for the same rows, on the same server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from evergreen.config import ServingConfig, serving_from_dict
from evergreen.errors import ConfigError
from evergreen.registry import Registry
from evergreen.serving import ApiKeys, ServerThread, build
from evergreen.tf import tensorflow
from tests.serving_support import MODEL, Exports, publish, publish_generic, shared_exports

KEY = "grpc-test-key-0123456789"
TEXTS = ["Great coffee, would buy again", "Stale and awful", "ok tea"]
MAX_ROWS = 64
MAX_BYTES = 100_000


@dataclass
class Running:
    rest: httpx.Client
    channel: grpc.Channel
    target: str
    audit: Path

    @property
    def predict(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    @property
    def models(self) -> model_service_pb2_grpc.ModelServiceStub:
        return model_service_pb2_grpc.ModelServiceStub(self.channel)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def registry(exports: Exports, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """reviews: version 1 (great-1/other-1) champion, 2 canary; churn and photos: hand-made;
    broken: its aliases.json is damaged."""
    folder = tmp_path_factory.mktemp("grpc")
    registry = Registry(folder / "registry")
    publish(registry, exports, 0)
    registry.set_alias(MODEL, "canary", publish(registry, exports, 1, champion=False))
    publish_generic(registry, folder)
    # 'broken': a damaged aliases.json, so nothing of it serves (UNAVAILABLE, not NOT_FOUND)
    _publish_example_model(registry, folder)
    registry.publish("broken", folder / "churn", {})
    (registry.root / "broken" / "aliases.json").write_text("{not json", encoding="utf-8")
    return registry


def _publish_example_model(registry: Registry, folder: Path) -> None:
    """'examples': TF Serving's classify and regress signatures, over serialized tf.Examples.

    classify: classes ["low", "high"], scores [1 - x/10, x/10]; regress: outputs = 2x + y.
    """
    tf = tensorflow()
    features = {
        "x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        "y": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    }

    class Examples(tf.Module):
        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
        def classify(self, inputs):
            x = tf.io.parse_example(inputs, features)["x"] / 10
            rows = tf.shape(x)[0]
            classes = tf.tile(tf.constant([["low", "high"]]), [rows, 1])
            return {"classes": classes, "scores": tf.stack([1 - x, x], axis=1)}

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
        def regress(self, inputs):
            parsed = tf.io.parse_example(inputs, features)
            return {"outputs": 2 * parsed["x"] + parsed["y"]}

    module = Examples()
    signatures = {"serving_default": module.classify, "regress": module.regress}
    tf.saved_model.save(module, str(folder / "examples"), signatures=signatures)
    registry.publish("examples", folder / "examples", {})


def _serve(
    registry: Registry, settings: ServingConfig, keys: ApiKeys | None = None
) -> ServerThread:
    return ServerThread(build(registry.root, settings, api_keys=keys), settings)


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    audit = tmp_path_factory.mktemp("grpc-logs") / "audit.jsonl"
    settings = ServingConfig(
        port=0,
        grpc_port=0,
        audit_log=str(audit),
        batch_timeout_ms=1.0,
        max_rows_per_request=MAX_ROWS,
        max_body_bytes=MAX_BYTES,
    )
    with (
        _serve(registry, settings) as running,
        httpx.Client(base_url=running.url, timeout=60) as rest,
        grpc.insecure_channel(running.grpc_target) as channel,
    ):
        yield Running(rest, channel, running.grpc_target, audit)


def _spec(request, model=MODEL, version=None, label="", signature=""):  # noqa: ANN001, ANN202
    request.model_spec.name = model
    if label:  # version and version_label are a oneof: setting one clears the other
        request.model_spec.version_label = label
    if version is not None:
        request.model_spec.version.value = version
    request.model_spec.signature_name = signature
    return request


def _predict_request(texts: list[str], **spec) -> predict_pb2.PredictRequest:  # noqa: ANN003
    request = _spec(predict_pb2.PredictRequest(), **spec)
    request.inputs["text"].CopyFrom(tensorflow().make_tensor_proto(texts))
    return request


def _examples(request, rows: list[dict], context: dict | None = None):  # noqa: ANN001, ANN202
    """Fill a Classify/Regress request's input with tf.Example protos of ``rows``."""
    tf = tensorflow()

    def example(row: dict) -> object:
        features = {}
        for name, value in row.items():
            if isinstance(value, str):
                features[name] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[value.encode()])
                )
            elif isinstance(value, float):
                features[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            else:
                features[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Example(features=tf.train.Features(feature=features))

    if context is None:
        request.input.example_list.examples.extend(example(r) for r in rows)
    else:
        request.input.example_list_with_context.examples.extend(example(r) for r in rows)
        request.input.example_list_with_context.context.CopyFrom(example(context))
    return request


def _code(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001, ANN002, ANN003
    with pytest.raises(grpc.RpcError) as failed:
        call(*args, **kwargs)
    return failed.value.code(), failed.value.details()


# -- TF Serving's PredictionService and ModelService --------------------------------------------


def test_predict_answers_what_rest_answers(server: Running):
    response, call = server.predict.Predict.with_call(_predict_request(TEXTS), timeout=60)
    tf = tensorflow()
    scores = tf.make_ndarray(response.outputs["scores"])
    classes = tf.make_ndarray(response.outputs["classes"])
    rest = server.rest.post(f"/v1/models/{MODEL}:predict", json={"instances": TEXTS}).json()
    np.testing.assert_allclose(scores, [p["scores"] for p in rest["predictions"]], rtol=1e-6)
    assert [[c.decode() for c in row] for row in classes] == [
        p["classes"] for p in rest["predictions"]
    ]
    assert (
        scores.shape == (3, 2) and response.outputs["scores"].dtype == tf.float32.as_datatype_enum
    )
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert ("x-model-version", "1") in call.trailing_metadata()
    # output_filter and another signature, as in TF Serving
    best = server.predict.Predict(_predict_request(TEXTS, signature="classify"), timeout=60)
    assert set(best.outputs) == {"label", "score"}
    filtered = _predict_request(TEXTS)
    filtered.output_filter.append("scores")
    assert set(server.predict.Predict(filtered, timeout=60).outputs) == {"scores"}


def test_version_and_label_pick_the_version(server: Running):
    tf = tensorflow()

    def classes(**spec) -> set[str]:  # noqa: ANN003
        response = server.predict.Predict(_predict_request(["x"], **spec), timeout=60)
        return {c.decode() for c in tf.make_ndarray(response.outputs["classes"]).reshape(-1)}

    assert classes() == {"great-1", "other-1"}
    assert classes(label="canary") == classes(version=2) == {"great-2", "other-2"}
    assert classes(label="champion") == classes(version=1) == {"great-1", "other-1"}


def test_classify_and_regress_take_tf_examples(server: Running):
    rows = [{"text": t} for t in TEXTS]
    request = _examples(_spec(classification_pb2.ClassificationRequest(), version=2), rows)
    response = server.predict.Classify(request, timeout=60)
    got = [[[c.label, c.score] for c in r.classes] for r in response.result.classifications]
    rest = server.rest.post(
        f"/v1/models/{MODEL}/versions/2:classify", json={"examples": rows}
    ).json()["results"]
    assert [[label for label, _ in r] for r in got] == [[label for label, _ in r] for r in rest]
    np.testing.assert_allclose(
        [[s for _, s in r] for r in got], [[s for _, s in r] for r in rest], rtol=1e-6
    )
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "classification"  # serialized tf.Examples
    with_context = _examples(
        _spec(classification_pb2.ClassificationRequest(), version=2), [{}], context=rows[0]
    )
    first = server.predict.Classify(with_context, timeout=60).result.classifications[0]
    assert [c.label for c in first.classes] == [label for label, _ in got[0]]
    np.testing.assert_allclose([c.score for c in first.classes], [s for _, s in got[0]], rtol=1e-6)

    churn = [
        {"minutes": 10.0, "calls": 2, "plan": "gold"},
        {"minutes": 4.0, "calls": 0, "plan": "basic"},
    ]
    regressed = server.predict.Regress(
        _examples(_spec(regression_pb2.RegressionRequest(), model="churn"), churn), timeout=60
    )
    rest_churn = server.rest.post("/v1/models/churn:predict", json={"instances": churn}).json()
    assert (
        [r.value for r in regressed.result.regressions] == rest_churn["predictions"] == [107.0, 2.0]
    )
    code, message = _code(
        server.predict.Classify,
        _examples(_spec(classification_pb2.ClassificationRequest(), model="churn"), churn),
        timeout=60,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no classification outputs" in message


def test_classify_and_regress_signatures_take_serialized_examples(server: Running):
    rows = [{"x": 2.0}, {"x": 7.0, "y": 1.0}]
    classify = _examples(_spec(classification_pb2.ClassificationRequest(), model="examples"), rows)
    result = server.predict.Classify(classify, timeout=60).result.classifications
    assert [[c.label for c in r.classes] for r in result] == [["low", "high"]] * 2
    np.testing.assert_allclose(
        [[c.score for c in r.classes] for r in result], [[0.8, 0.2], [0.3, 0.7]], rtol=1e-6
    )
    regress = _examples(
        _spec(regression_pb2.RegressionRequest(), model="examples", signature="regress"),
        [{"y": 1.0}, {}],
        context={"x": 3.0},  # merged into every example, as TF Serving does
    )
    values = [r.value for r in server.predict.Regress(regress, timeout=60).result.regressions]
    assert values == [7.0, 6.0]


def test_metadata_is_the_rest_metadata_as_protos(server: Running):
    request = _spec(get_model_metadata_pb2.GetModelMetadataRequest())
    request.metadata_field.append("signature_def")
    response = server.predict.GetModelMetadata(request, timeout=60)
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    rest = server.rest.get(f"/v1/models/{MODEL}/metadata").json()
    from_rest = json_format.ParseDict(
        rest["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap()
    )
    assert defs == from_rest
    assert {"classification", "classify", "serving_default", "tokenize"} <= set(defs.signature_def)
    assert defs.signature_def["classification"].method_name == "tensorflow/serving/classify"
    text = defs.signature_def["serving_default"].inputs["text"]
    assert text.dtype == tensorflow().string.as_datatype_enum
    assert [d.size for d in text.tensor_shape.dim] == [-1]
    assert response.model_spec.version.value == 1


def test_model_status_lists_versions_like_rest(server: Running):
    status = server.models.GetModelStatus(
        _spec(get_model_status_pb2.GetModelStatusRequest()), timeout=60
    )
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    rest = server.rest.get(f"/v1/models/{MODEL}").json()
    assert json_format.MessageToDict(status)["model_version_status"][0]["version"] == "2"
    assert len(rest["model_version_status"]) == 2
    canary = server.models.GetModelStatus(
        _spec(get_model_status_pb2.GetModelStatusRequest(), label="canary"), timeout=60
    )
    assert [s.version for s in canary.model_version_status] == [2]


@pytest.mark.parametrize(
    ("request_args", "code", "message"),
    [
        ({"model": "nope"}, "NOT_FOUND", "model 'nope' is not served here"),
        ({"model": "broken"}, "UNAVAILABLE", "model 'broken' has no version loaded"),
        ({"version": 9}, "NOT_FOUND", "has no loaded version 9"),
        ({"label": "blue"}, "NOT_FOUND", "has no label 'blue'"),
        ({"signature": "nope"}, "INVALID_ARGUMENT", "signature 'nope' not found"),
        ({"model": ""}, "INVALID_ARGUMENT", "model_spec.name is empty"),
    ],
)
def test_bad_model_specs_get_the_right_code(server: Running, request_args, code, message):  # noqa: ANN001
    got, details = _code(
        server.predict.Predict, _predict_request(["x"], **request_args), timeout=60
    )
    assert got.name == code and message in details, details


def test_bad_tensors_get_the_right_code(server: Running):
    tf = tensorflow()
    wrong_dtype = _spec(predict_pb2.PredictRequest())
    wrong_dtype.inputs["text"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    unknown = _predict_request(["x"])
    unknown.inputs["txt"].CopyFrom(tf.make_tensor_proto(["y"]))
    rank = _spec(predict_pb2.PredictRequest())
    rank.inputs["text"].CopyFrom(tf.make_tensor_proto([["a", "b"]]))
    too_many = _predict_request(["x"] * (MAX_ROWS + 1))
    too_big = _predict_request(["x" * (MAX_BYTES + 1)])
    for request, code, message in [
        (
            wrong_dtype,
            "INVALID_ARGUMENT",
            "input 'text' is DT_FLOAT; signature 'serving_default' takes DT_STRING",
        ),
        (unknown, "INVALID_ARGUMENT", "unknown: txt"),
        (rank, "INVALID_ARGUMENT", "has shape [1, 2]; the signature takes [-1]"),
        (too_many, "RESOURCE_EXHAUSTED", f"at most {MAX_ROWS} per request"),
        (too_big, "RESOURCE_EXHAUSTED", "larger than max"),  # gRPC's own message
    ]:
        got, details = _code(server.predict.Predict, request, timeout=60)
        assert got.name == code and message in details, details
    metadata = _spec(get_model_metadata_pb2.GetModelMetadataRequest())
    metadata.metadata_field.append("everything")
    got, details = _code(server.predict.GetModelMetadata, metadata, timeout=60)
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "ask for ['signature_def']" in details


def test_a_deadline_the_client_gives_up_on_leaves_the_server_serving(server: Running):
    # 0.1 ms: no round trip with a model call fits, so the client gives up (or the server
    # finds the deadline passed); either way the next request is answered.
    code, _ = _code(server.predict.Predict, _predict_request(["late"]), timeout=0.0001)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.predict.Predict(_predict_request(["on time"]), timeout=60).outputs["scores"]


# -- Open Inference Protocol: tritonclient.grpc ----------------------------------------------


def test_tritonclient_grpc_health_metadata_and_infer(server: Running):
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(server.target)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "2")
    assert client.get_server_metadata().name == "evergreen"
    metadata = client.get_model_metadata(MODEL)
    assert metadata.versions == ["1", "2"] and metadata.platform == "tensorflow_savedmodel"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("text", "BYTES", [-1])
    ]

    text = triton.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    result = client.infer(MODEL, [text], model_version="2", request_id="42")
    assert result.get_response().id == "42" and result.get_response().model_version == "2"
    rest = server.rest.post(
        f"/v2/models/{MODEL}/versions/2/infer",
        json={"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": TEXTS}]},
    ).json()
    by_name = {o["name"]: o for o in rest["outputs"]}
    np.testing.assert_allclose(
        result.as_numpy("scores").reshape(-1), by_name["scores"]["data"], rtol=1e-6
    )
    assert [c.decode() for c in result.as_numpy("classes").reshape(-1)] == by_name["classes"][
        "data"
    ]

    # numbers: FP32, INT64 and BYTES inputs in raw_input_contents; only the requested output
    inputs = [
        triton.InferInput("minutes", [2], "FP32"),
        triton.InferInput("calls", [2], "INT64"),
        triton.InferInput("plan", [2], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(np.array([10.0, 4.0], dtype=np.float32))
    inputs[1].set_data_from_numpy(np.array([2, 0], dtype=np.int64))
    inputs[2].set_data_from_numpy(np.array([b"gold", b"basic"], dtype=object))
    churn = client.infer("churn", inputs, outputs=[triton.InferRequestedOutput("score")])
    assert churn.as_numpy("score").tolist() == [107.0, 2.0]

    with pytest.raises(triton.InferenceServerException) as failed:
        client.infer("churn", inputs[:2])
    assert failed.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert (
        "takes the inputs calls (int64[None]), minutes (float32[None]), plan"
        in failed.value.message()
    )
    with pytest.raises(triton.InferenceServerException) as failed:
        client.get_model_metadata("nope")
    assert failed.value.status() == "StatusCode.NOT_FOUND"


def test_v2_typed_contents_and_bytes_outputs(server: Running):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    raw = bytes(range(256))
    request = service_pb2.ModelInferRequest(model_name="photos")
    request.inputs.add(
        name="image_bytes", datatype="BYTES", shape=[1]
    ).contents.bytes_contents.append(raw)
    response = stub.ModelInfer(request, timeout=60)
    outputs = {
        o.name: (o, c) for o, c in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    echo, echo_raw = outputs["echo_bytes"]
    assert echo.datatype == "BYTES" and echo_raw == len(raw).to_bytes(4, "little") + raw
    length, length_raw = outputs["length"]
    assert length.datatype == "INT32" and np.frombuffer(length_raw, "<i4").tolist() == [256]
    bad = service_pb2.ModelInferRequest(model_name="photos")
    bad.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
    bad.raw_input_contents.append(b"\x09\x00\x00\x00abc")
    with pytest.raises(grpc.RpcError) as failed:
        stub.ModelInfer(bad, timeout=60)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "runs past the end" in failed.value.details()


# -- shared with REST: batches, metrics, audit log ------------------------------------------


def _batches(url: str) -> tuple[float, float]:
    """(model calls, rows) of reviews version 1's serving_default so far, from /metrics."""
    found = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for name in ("evergreen_batch_size_count", "evergreen_batch_size_sum"):
            if line.startswith(name + "{") and 'model="reviews"' in line and 'version="1"' in line:
                found[name] = float(line.rsplit(" ", 1)[1])
    return found.get("evergreen_batch_size_count", 0.0), found.get("evergreen_batch_size_sum", 0.0)


def test_grpc_and_rest_requests_share_model_calls(registry: Registry):
    import asyncio

    settings = ServingConfig(
        port=0, grpc_port=0, max_batch_size=32, batch_timeout_ms=20, audit_log=os.devnull
    )
    texts = [f"review number {i}: {'great' if i % 2 else 'stale'} coffee" for i in range(24)]

    async def main(url: str, target: str) -> list[object]:
        async with (
            httpx.AsyncClient(base_url=url, timeout=60) as client,
            grpc.aio.insecure_channel(target) as channel,
        ):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            rest = [
                client.post(f"/v1/models/{MODEL}:predict", json={"instances": [t]})
                for t in texts[0::2]
            ]
            calls = [stub.Predict(_predict_request([t]), timeout=60) for t in texts[1::2]]
            return await asyncio.gather(*rest, *calls)

    with _serve(registry, settings) as running:
        before = _batches(running.url)
        answers = asyncio.run(main(running.url, running.grpc_target))
        after = _batches(running.url)
        together = httpx.post(
            f"{running.url}/v1/models/{MODEL}:predict", json={"instances": texts}, timeout=60
        ).json()["predictions"]
    calls, rows = after[0] - before[0], after[1] - before[1]
    assert rows == 24 and calls < 24 / 3, f"{calls} model calls for 24 concurrent requests"
    tf = tensorflow()
    scores = [a.json()["predictions"][0]["scores"] for a in answers[:12]]  # type: ignore[attr-defined]
    scores += [tf.make_ndarray(a.outputs["scores"])[0].tolist() for a in answers[12:]]  # type: ignore[attr-defined]
    expected = [together[i]["scores"] for i in [*range(0, 24, 2), *range(1, 24, 2)]]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_metrics_and_audit_count_grpc_calls(server: Running):
    server.predict.Predict(_predict_request(["metrics"]), timeout=60)
    _code(server.predict.Predict, _predict_request(["x"], model="nope"), timeout=60)
    text = server.rest.get("/metrics").text
    assert 'api="grpc_v1",model="reviews",status="OK",version="1"' in text
    assert 'api="grpc_v1",model="_unknown",status="NOT_FOUND",version=""' in text
    assert "process_cpu_seconds_total" in text and "python_info" in text
    tf_serving_path = server.rest.get("/monitoring/prometheus/metrics")
    assert tf_serving_path.status_code == 200 and "evergreen_requests_total" in tf_serving_path.text
    deadline = time.monotonic() + 30  # the audit log is flushed at the end of the loop's turn
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.audit.read_text().splitlines()]
        grpc_lines = [x for x in lines if x["method"] == "grpc"]
        if any(x["status"] == "NOT_FOUND" for x in grpc_lines):
            break
        time.sleep(0.1)
    ok = [x for x in grpc_lines if x["path"].endswith("/Predict") and x["status"] == "OK"]
    assert ok and ok[-1]["rows"] == 1 and ok[-1]["model"] == MODEL and ok[-1]["version"] == 1


# -- API keys and TLS ---------------------------------------------------------------------------


def test_api_keys_are_required_over_grpc(registry: Registry):
    import tritonclient.grpc as triton

    settings = ServingConfig(port=0, grpc_port=0, audit_log=os.devnull)
    keys = ApiKeys.parse(f"ci:{KEY}", "test")
    with (
        _serve(registry, settings, keys) as running,
        grpc.insecure_channel(running.grpc_target) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = _predict_request(["x"])
        code, message = _code(stub.Predict, request, timeout=60)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "requires an API key" in message
        code, message = _code(
            stub.Predict,
            request,
            metadata=[("authorization", "Bearer not-the-key-at-all")],
            timeout=60,
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not valid" in message
        for metadata in ([("authorization", f"Bearer {KEY}")], [("x-api-key", KEY)]):
            assert (
                stub.Predict(request, metadata=metadata, timeout=60).model_spec.version.value == 1
            )
        client = triton.InferenceServerClient(running.grpc_target)
        assert client.is_server_live() and client.is_server_ready()  # probes stay open
        with pytest.raises(triton.InferenceServerException) as failed:
            client.get_model_metadata(MODEL)
        assert failed.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.get_model_metadata(MODEL, headers={"x-api-key": KEY}).name == MODEL


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the certificate")
def test_tls_over_grpc(registry: Registry, tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    settings = ServingConfig(
        port=0, grpc_port=0, tls_cert=str(cert), tls_key=str(key), audit_log=os.devnull
    )
    with _serve(registry, settings) as running:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(running.grpc_target, credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(_predict_request(["tea"]), timeout=60).model_spec.version.value == 1
        with grpc.insecure_channel(running.grpc_target) as plain:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(plain)
            assert (
                _code(stub.Predict, _predict_request(["tea"]), timeout=10)[0]
                == grpc.StatusCode.UNAVAILABLE
            )


# -- config and the command ----------------------------------------------------------------


def test_grpc_port_is_validated_and_defaults_to_8500():
    assert serving_from_dict({}).grpc_port == 8500
    assert serving_from_dict({"grpc_port": -1}).grpc_port == -1
    assert ServingConfig().grpc_port == -1  # made in code: no fixed port unless asked
    for value, message in [
        (8501, "it is serving.port too"),
        (-2, "serving.grpc_port"),
        (70000, "0: any free port, -1: no gRPC server"),
        ("8500", "serving.grpc_port"),
    ]:
        with pytest.raises(ConfigError, match=message):
            serving_from_dict({"grpc_port": value})


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # SystemExit(3)
def test_a_taken_grpc_port_stops_startup(server: Running, registry: Registry):
    # Taken by another evergreen server: gRPC's default SO_REUSEPORT would let both bind and
    # share the connections; the server turns it off, so the second one must not start.
    port = int(server.target.rsplit(":", 1)[1])
    settings = ServingConfig(port=0, grpc_port=port, audit_log=os.devnull)
    with pytest.raises(RuntimeError, match="stopped during startup"):
        _serve(registry, settings).start()
    with socket.socket() as taken:  # and by any other socket
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = ServingConfig(port=0, grpc_port=taken.getsockname()[1], audit_log=os.devnull)
        with pytest.raises(RuntimeError, match="stopped during startup"):
            _serve(registry, settings).start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_opens_grpc(registry: Registry):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("EVERGREEN_API_KEYS", None)
    rest_port, grpc_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "evergreen", "serve", "--registry", str(registry.root)]
    command += ["--port", str(rest_port), "--grpc-port", str(grpc_port), "--audit-log", os.devnull]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=180)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(_predict_request(["tea"]), timeout=60)
        assert response.model_spec.version.value == 1
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"and gRPC {grpc_port}" in out
