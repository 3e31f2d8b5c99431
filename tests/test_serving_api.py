"""The model server over real HTTP on loopback: both APIs, bad inputs, auth, TLS, logs, metrics.

Request bodies follow the examples of TF Serving's REST API page (api_rest.md) and of the Open
Inference Protocol's REST spec (KServe required_api.md), adapted to the models' input names.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evergreen import config as config_mod
from evergreen.config import ServingConfig, serving_from_dict
from evergreen.errors import ConfigError
from evergreen.registry import Registry
from evergreen.serving import ApiKeys, ServerThread, build, check_settings, is_loopback
from tests.serving_support import MODEL, Exports, publish, publish_generic, shared_exports

KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def registry(exports: Exports, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Version 1 (classes great-1/other-1) is champion, version 2 (great-2/...) is canary."""
    registry = Registry(tmp_path_factory.mktemp("api") / "registry")
    publish(registry, exports, 0)
    canary = publish(registry, exports, 1, champion=False)
    registry.set_alias(MODEL, "canary", canary)
    return registry


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    logs = tmp_path_factory.mktemp("api-logs")
    settings = ServingConfig(
        port=0,
        max_body_bytes=20_000,
        request_log_sample_rate=1.0,
        audit_log=str(logs / "audit.jsonl"),
        batch_timeout_ms=1.0,
    )
    app = build(registry.root, settings, request_log_dir=logs / "requests")
    with (
        ServerThread(app, settings) as running,
        httpx.Client(base_url=running.url, timeout=30) as client,
    ):
        client.logs = logs  # type: ignore[attr-defined]
        yield client


def classes_of(response: httpx.Response) -> set[str]:
    predictions = response.json()["predictions"]
    return {c for p in predictions for c in p["classes"]}


# -- TF Serving REST API ----------------------------------------------------------------------


def test_status_lists_loaded_versions_in_tf_serving_format(server: httpx.Client):
    r = server.get(f"/v1/models/{MODEL}")
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }
    assert [
        s["version"]
        for s in server.get(f"/v1/models/{MODEL}/versions/1").json()["model_version_status"]
    ] == ["1"]
    canary = server.get(f"/v1/models/{MODEL}/labels/canary")
    assert canary.json()["model_version_status"][0]["version"] == "2"
    assert canary.headers["X-Model-Version"] == "2"


def test_metadata_describes_every_signature(server: httpx.Client):
    r = server.get(f"/v1/models/{MODEL}/metadata")
    body = r.json()
    assert r.status_code == 200 and body["model_spec"] == {
        "name": MODEL,
        "signature_name": "",
        "version": "1",
    }
    defs = body["metadata"]["signature_def"]["signature_def"]
    # Every SignatureDef of saved_model.pb, as TF Serving lists them (its init op included).
    assert sorted(defs) == [
        "__saved_model_init_op",
        "classification",
        "classify",
        "regression",
        "serving_default",
        "tokenize",
    ]
    assert defs["serving_default"]["inputs"]["text"] == {
        "dtype": "DT_STRING",
        "tensor_shape": {"unknown_rank": False, "dim": [{"size": "-1", "name": ""}]},
        "name": "serving_default_text:0",  # the graph tensor, as TF Serving reports it
    }
    assert defs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert defs["classification"]["method_name"] == "tensorflow/serving/classify"
    assert defs["serving_default"]["outputs"]["scores"]["tensor_shape"]["dim"][1]["size"] == "2"
    assert defs["serving_default"]["outputs"]["scores"]["dtype"] == "DT_FLOAT"  # not DT_FLOAT32
    # TF Serving's own proto reads the signatures back, every dtype a real DataType.
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    parsed = json_format.ParseDict(
        body["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap()
    )
    assert parsed.signature_def["serving_default"].outputs["scores"].dtype == 1  # DT_FLOAT
    assert (
        server.get(f"/v1/models/{MODEL}/versions/2/metadata").json()["model_spec"]["version"] == "2"
    )


def test_predict_row_format_as_in_the_tf_serving_docs(server: httpx.Client):
    # {"instances": ["foo", "bar", "baz"]}: a list of scalars for a one-input signature.
    r = server.post(f"/v1/models/{MODEL}:predict", json={"instances": ["foo", "bar", "baz"]})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 3 and r.headers["X-Model-Version"] == "1"
    for p in predictions:
        assert p["classes"] == ["great-1", "other-1"]
        assert abs(sum(p["scores"]) - 1) < 1e-5
    # The same rows as objects {input: value} give the same answer.
    named = server.post(
        f"/v1/models/{MODEL}:predict",
        json={"instances": [{"text": t} for t in ("foo", "bar", "baz")]},
    )
    assert named.json() == r.json()


def test_predict_columnar_format_and_signature_name(server: httpx.Client):
    rows = server.post(
        f"/v1/models/{MODEL}:predict", json={"instances": ["Great coffee!", "Stale."]}
    ).json()
    columns = server.post(
        f"/v1/models/{MODEL}:predict", json={"inputs": {"text": ["Great coffee!", "Stale."]}}
    )
    bare = server.post(f"/v1/models/{MODEL}:predict", json={"inputs": ["Great coffee!", "Stale."]})
    assert columns.status_code == 200 and columns.json() == bare.json()
    outputs = columns.json()["outputs"]
    assert outputs["classes"] == [p["classes"] for p in rows["predictions"]]
    assert outputs["scores"] == [p["scores"] for p in rows["predictions"]]

    best = server.post(
        f"/v1/models/{MODEL}:predict",
        json={"signature_name": "classify", "instances": ["Great coffee!", "Stale."]},
    ).json()["predictions"]
    for b, p in zip(best, rows["predictions"], strict=True):
        assert (
            b["score"] == max(p["scores"])
            and b["label"] == p["classes"][p["scores"].index(b["score"])]
        )


def test_b64_strings_are_decoded_like_text(server: httpx.Client):
    import base64

    plain = server.post(f"/v1/models/{MODEL}:predict", json={"instances": ["great tea"]}).json()
    b64 = server.post(
        f"/v1/models/{MODEL}:predict",
        json={"instances": [{"b64": base64.b64encode(b"great tea").decode()}]},
    )
    assert b64.status_code == 200 and b64.json() == plain


def test_classify_with_examples_and_context(server: httpx.Client):
    r = server.post(
        f"/v1/models/{MODEL}/versions/2:classify",
        json={"examples": [{"text": "Best tea ever"}, {"text": ["Awful, stale"]}]},
    )
    assert r.status_code == 200, r.text
    result = r.json()["results"]
    assert len(result) == 2 and r.headers["X-Model-Version"] == "2"
    assert [label for label, _ in result[0]] == ["great-2", "other-2"]
    context = server.post(
        f"/v1/models/{MODEL}/versions/2:classify",
        json={"context": {"text": "Best tea ever"}, "examples": [{}]},
    )
    assert context.json()["results"][0] == result[0]


def test_labels_and_versions_route_to_their_version(server: httpx.Client):
    by_label = server.post(f"/v1/models/{MODEL}/labels/canary:predict", json={"instances": ["x"]})
    by_version = server.post(f"/v1/models/{MODEL}/versions/2:predict", json={"instances": ["x"]})
    default = server.post(f"/v1/models/{MODEL}:predict", json={"instances": ["x"]})
    assert classes_of(by_label) == classes_of(by_version) == {"great-2", "other-2"}
    assert classes_of(default) == {"great-1", "other-1"}  # canary_percent is 0 here
    assert by_label.headers["X-Model-Version"] == "2" and default.headers["X-Model-Version"] == "1"


# -- Open Inference Protocol ------------------------------------------------------------------


def test_v2_health_server_and_model_metadata(server: httpx.Client):
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").status_code == 200
    assert server.get("/v2").json()["name"] == "evergreen"
    meta = server.get(f"/v2/models/{MODEL}").json()
    assert meta == {
        "name": MODEL,
        "versions": ["1", "2"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "classes", "datatype": "BYTES", "shape": [-1, 2]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, 2]},
        ],
    }
    assert server.get(f"/v2/models/{MODEL}/ready").json() == {
        "name": MODEL,
        "version": "1",
        "ready": True,
    }
    assert server.get(f"/v2/models/{MODEL}/versions/2/ready").status_code == 200
    assert server.get(f"/v2/models/{MODEL}/versions/9/ready").status_code == 404


def test_v2_infer_as_in_the_protocol_spec(server: httpx.Client):
    # The spec's example: an id echoed back, a shape covering the batch, one requested output.
    body = {
        "id": "42",
        "inputs": [
            {"name": "text", "shape": [3], "datatype": "BYTES", "data": ["good", "bad", "ok"]}
        ],
        "outputs": [{"name": "scores"}],
    }
    r = server.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["id"] == "42" and answer["model_name"] == MODEL and answer["model_version"] == "1"
    assert [o["name"] for o in answer["outputs"]] == ["scores"]
    scores = answer["outputs"][0]
    assert scores["shape"] == [3, 2] and scores["datatype"] == "FP32" and len(scores["data"]) == 6
    v1 = server.post(
        f"/v1/models/{MODEL}:predict", json={"instances": ["good", "bad", "ok"]}
    ).json()
    assert scores["data"] == [s for p in v1["predictions"] for s in p["scores"]]

    # Data may come nested or flat; the shape decides. [3, 1] is not the signature's [-1].
    nested = dict(body, inputs=[dict(body["inputs"][0], data=[["good"], ["bad"], ["ok"]])])
    assert (
        server.post(f"/v2/models/{MODEL}/infer", json=nested).json()["outputs"] == answer["outputs"]
    )
    wrong_rank = dict(body, inputs=[dict(nested["inputs"][0], shape=[3, 1])])
    r = server.post(f"/v2/models/{MODEL}/infer", json=wrong_rank)
    assert (
        r.status_code == 400
        and "has shape [3, 1] but the signature expects ['batch']" in r.json()["error"]
    )
    pinned = server.post(f"/v2/models/{MODEL}/versions/2/infer", json={"inputs": body["inputs"]})
    assert pinned.json()["model_version"] == "2" and "id" not in pinned.json()
    assert pinned.json()["outputs"][0] == {
        "name": "classes",
        "shape": [3, 2],
        "datatype": "BYTES",
        "data": ["great-2", "other-2"] * 3,
    }


# -- bad requests -----------------------------------------------------------------------------

BAD = [
    (
        "malformed-json",
        "POST",
        f"/v1/models/{MODEL}:predict",
        b'{"instances": ["a",}',
        400,
        "not valid JSON",
    ),
    (
        "not-an-object",
        "POST",
        f"/v1/models/{MODEL}:predict",
        b'["a"]',
        400,
        "must be a JSON object",
    ),
    ("empty-body", "POST", f"/v1/models/{MODEL}:predict", b"", 400, "body is empty"),
    (
        "wrong-type",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": [1, 2]},
        400,
        "expects strings",
    ),
    (
        "wrong-shape",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": [["a", "b"]]},
        400,
        "expects ['batch'] (a single value per row)",
    ),
    (
        "ragged",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"inputs": {"text": [["a"], ["b", "c"]]}},
        400,
        "every row must have the same shape",
    ),
    (
        "unknown-input",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": [{"txt": "a"}]},
        400,
        "did you mean 'text'",
    ),
    (
        "both-formats",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": ["a"], "inputs": ["a"]},
        400,
        "not both",
    ),
    (
        "no-inputs",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"signature_name": "serving_default"},
        400,
        "one is required",
    ),
    (
        "typo-key",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instance": ["a"]},
        400,
        "did you mean 'instances'",
    ),
    (
        "bad-b64",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": [{"b64": "%%%"}]},
        400,
        "not valid base64",
    ),
    (
        "unknown-signature",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"signature_name": "nope", "instances": ["a"]},
        400,
        "signatures: classification, classify, regression, serving_default, tokenize",
    ),
    (
        "unknown-model",
        "POST",
        "/v1/models/nope:predict",
        {"instances": ["a"]},
        404,
        "models: reviews",
    ),
    (
        "unknown-version",
        "POST",
        f"/v1/models/{MODEL}/versions/7:predict",
        {"instances": ["a"]},
        404,
        "loaded: 1 (champion), 2 (canary)",
    ),
    ("version-not-a-number", "GET", f"/v1/models/{MODEL}/versions/x", None, 400, "not a number"),
    (
        "unknown-label",
        "GET",
        f"/v1/models/{MODEL}/labels/prod/metadata",
        None,
        404,
        "labels: canary=2, champion=1",
    ),
    (
        "regress",
        "POST",
        f"/v1/models/{MODEL}:regress",
        {"signature_name": "classify", "examples": [{"text": "a"}]},
        400,
        "not a regression signature",
    ),
    (
        "classify-bad-signature",
        "POST",
        f"/v1/models/{MODEL}:classify",
        {"signature_name": "tokenize", "examples": [{"text": "a"}]},
        400,
        "no classification outputs",
    ),
    ("get-predict", "GET", f"/v1/models/{MODEL}:predict", None, 405, "takes POST"),
    ("unknown-route", "GET", "/v3/anything", None, 404, "no route /v3/anything"),
    (
        "oversized",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": ["x" * 30_000]},
        413,
        "at most 20000",
    ),
    (
        "v2-datatype",
        "POST",
        f"/v2/models/{MODEL}/infer",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
        400,
        "expects 'BYTES'",
    ),
    (
        "v2-count",
        "POST",
        f"/v2/models/{MODEL}/infer",
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]},
        400,
        "holds 2 values but data has 1",
    ),
    (
        "v2-missing-field",
        "POST",
        f"/v2/models/{MODEL}/infer",
        {"inputs": [{"name": "text", "data": ["a"]}]},
        400,
        "lacks shape, datatype",
    ),
    (
        "v2-unknown-output",
        "POST",
        f"/v2/models/{MODEL}/infer",
        {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
            "outputs": [{"name": "probs"}],
        },
        400,
        "outputs: classes, scores",
    ),
    ("v2-unknown-model", "POST", "/v2/models/nope/infer", {"inputs": []}, 404, "not served here"),
    # Near misses of the prediction paths, which skip Starlette's router: they still get its
    # answers.
    (
        "v2-infer-extra-segment",
        "POST",
        f"/v2/models/{MODEL}/extra/infer",
        {"inputs": []},
        404,
        f"no route /v2/models/{MODEL}/extra/infer",
    ),
    ("v2-get-infer", "GET", f"/v2/models/{MODEL}/infer", None, 405, "does not take GET"),
    ("v1-no-model", "POST", "/v1/models/", {"instances": ["a"]}, 404, "no route /v1/models/"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_requests_get_the_right_status_and_say_what_to_fix(
    server: httpx.Client, method, path, body, status, message
):
    if isinstance(body, bytes):
        r = server.request(method, path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = server.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()["error"]


def test_chunked_oversized_body_is_cut_off(server: httpx.Client):
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        yield b'{"instances": ["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]}'

    r = server.post(f"/v1/models/{MODEL}:predict", content=chunks())
    assert r.status_code == 413 and "over 20000 bytes" in r.json()["error"]


# -- logs and metrics -------------------------------------------------------------------------


def test_request_log_has_one_line_per_row_in_the_agreed_format(server: httpx.Client):
    texts = ["logged one", "logged two", "logged three"]
    assert server.post(f"/v1/models/{MODEL}:predict", json={"instances": texts}).status_code == 200
    # A Classify request's examples are logged as serving_default rows too.
    classify = {"examples": [{"text": "logged four"}]}
    assert server.post(f"/v1/models/{MODEL}:classify", json=classify).status_code == 200
    texts.append("logged four")
    path = server.logs / "requests" / MODEL / f"{dt.datetime.now(dt.UTC).date().isoformat()}.jsonl"  # type: ignore[attr-defined]
    lines = []
    for _ in range(100):  # written by a background thread
        lines = (
            [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        )
        if any(line["inputs"]["text"] == "logged four" for line in lines):
            break
        time.sleep(0.05)
    ours = [line for line in lines if line["inputs"]["text"] in texts]
    assert [line["inputs"] for line in ours] == [{"text": t} for t in texts]
    for line in ours:
        assert set(line) == {"ts", "model", "version", "signature", "inputs"}
        assert (
            line["model"] == MODEL
            and line["version"] == 1
            and line["signature"] == "serving_default"
        )
        assert dt.datetime.fromisoformat(line["ts"]).tzinfo is not None


def test_audit_log_has_one_line_per_request_without_payloads(server: httpx.Client):
    marker = "audit-marker-text"
    server.post(f"/v1/models/{MODEL}/versions/2:predict", json={"instances": [marker]})
    server.get("/v1/models/nope")
    lines = [json.loads(line) for line in (server.logs / "audit.jsonl").read_text().splitlines()]  # type: ignore[attr-defined]
    assert marker not in (server.logs / "audit.jsonl").read_text()  # type: ignore[attr-defined]
    predict = [x for x in lines if x["path"] == f"/v1/models/{MODEL}/versions/2:predict"][-1]
    assert predict["who"] == "anonymous" and predict["version"] == 2 and predict["status"] == 200
    assert predict["rows"] == 1 and predict["latency_ms"] > 0
    missing = [x for x in lines if x["path"] == "/v1/models/nope"][-1]
    assert missing["status"] == 404 and missing["model"] == "nope"


def test_metrics_count_requests_batches_queue_and_loaded_versions(server: httpx.Client):
    server.post(f"/v1/models/{MODEL}:predict", json={"instances": ["a", "b"]})
    server.post(f"/v1/models/{MODEL}:predict", json={"instances": [1]})
    text = server.get("/metrics").text
    assert f'evergreen_requests_total{{api="v1",model="{MODEL}",status="200",version="1"}}' in text
    assert f'evergreen_requests_total{{api="v1",model="{MODEL}",status="400",version="1"}}' in text
    assert f'evergreen_request_latency_seconds_bucket{{api="v1",le="0.1",model="{MODEL}"}}' in text
    assert (
        'evergreen_batch_size_count{model="reviews",signature="serving_default",version="1"}'
        in text
    )
    assert 'evergreen_queue_depth{model="reviews"} 0.0' in text
    assert 'evergreen_model_load_seconds{model="reviews",version="2"}' in text
    assert 'evergreen_model_loaded{model="reviews",version="1"} 1.0' in text
    assert 'evergreen_model_label_version{label="canary",model="reviews"} 2.0' in text


# -- canary -----------------------------------------------------------------------------------


def test_canary_percent_sends_that_share_of_unlabelled_requests(registry: Registry):
    settings = ServingConfig(port=0, canary_percent=10, audit_log=os.devnull)
    with (
        ServerThread(build(registry.root, settings), settings) as running,
        httpx.Client(base_url=running.url) as client,
    ):
        versions = [
            client.post(f"/v1/models/{MODEL}:predict", json={"instances": ["tea"]}).headers[
                "X-Model-Version"
            ]
            for _ in range(100)
        ]
        pinned = client.post(
            f"/v1/models/{MODEL}/labels/champion:predict", json={"instances": ["tea"]}
        )
    assert versions.count("2") == 10 and versions.count("1") == 90
    assert pinned.headers["X-Model-Version"] == "1"


# -- security ---------------------------------------------------------------------------------


def test_api_keys_are_required_when_configured(registry: Registry, tmp_path: Path):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# team keys\nalice:{KEY}\n")
    keys = ApiKeys.load(key_file=key_file)
    audit = tmp_path / "audit.jsonl"
    settings = ServingConfig(port=0, audit_log=str(audit), log_payloads=True)
    with (
        ServerThread(build(registry.root, settings, api_keys=keys), settings) as running,
        httpx.Client(base_url=running.url) as client,
    ):
        url = f"/v1/models/{MODEL}:predict"
        body = {"instances": ["payload-marker"]}
        missing = client.post(url, json=body)
        wrong = client.post(url, json=body, headers={"Authorization": "Bearer not-the-key-at-all"})
        basic = client.post(url, json=body, headers={"Authorization": "Basic abc"})
        bearer = client.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"})
        header = client.get(f"/v2/models/{MODEL}", headers={"X-API-Key": KEY})
        metrics = client.get("/metrics")
        live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")
    assert missing.status_code == 401 and "Authorization: Bearer <key>" in missing.json()["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
    assert basic.status_code == 401 and "'Bearer <API key>'" in basic.json()["error"]
    assert bearer.status_code == 200 and header.status_code == 200
    assert metrics.status_code == 401
    assert live.status_code == 200 and ready.status_code == 200  # probes stay open
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [x["who"] for x in lines if x["path"] == url] == [
        "anonymous",
        "anonymous",
        "anonymous",
        "alice",
    ]
    assert KEY not in audit.read_text()
    assert lines[3]["payload"] == body  # log_payloads = true puts the body in


def test_non_loopback_bind_without_keys_is_refused():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(ConfigError, match="not a loopback address, so API keys are required"):
        check_settings(ServingConfig(host="0.0.0.0"), None)
    check_settings(ServingConfig(host="0.0.0.0"), ApiKeys.parse(KEY, "test"))
    with pytest.raises(ConfigError, match="at least 16"):
        ApiKeys.parse("bob:short", "test")
    with pytest.raises(ConfigError, match="tls_cert.*no such file"):
        check_settings(ServingConfig(tls_cert="/nope.pem", tls_key="/nope.key"), None)


def test_api_key_file_comments_may_hold_commas():
    keys = ApiKeys.parse(
        "# keys for the team, one per line\nalice:" + "a" * 20 + ", bob:" + "b" * 20, "keys.txt"
    )
    assert sorted(keys.owners.values()) == ["alice", "bob"]


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is needed to make a certificate"
)
def test_tls_serves_https(registry: Registry, tmp_path: Path):
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
    settings = ServingConfig(port=0, tls_cert=str(cert), tls_key=str(key), audit_log=os.devnull)
    with ServerThread(build(registry.root, settings), settings) as running:
        assert running.url.startswith("https://")
        r = httpx.post(
            f"{running.url}/v1/models/{MODEL}:predict",
            json={"instances": ["tea"]},
            verify=str(cert),
        )
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{running.port}/v2/health/live")


# -- config -----------------------------------------------------------------------------------


def test_serving_config_round_trips_and_names_bad_keys(tmp_path: Path):
    config = tmp_path / "evergreen.toml"
    config.write_text(
        '[pipeline]\nname = "reviews"\n[data]\npattern = "data/span-{SPAN}/*.csv"\nlabel = "score"\n'
        "[serving]\nport = 9000\nmax_batch_size = 64\ncanary_percent = 10\n"
    )
    loaded = config_mod.load(config)
    assert loaded.serving.port == 9000 and loaded.serving.max_batch_size == 64
    assert loaded.serving.canary_percent == 10.0 and loaded.serving.host == "127.0.0.1"
    again = config_mod.from_dict(loaded.to_dict(), base_dir=tmp_path)
    assert again.serving == loaded.serving
    for raw, message in [
        ({"max_batch_sise": 3}, "did you mean 'max_batch_size'"),
        ({"canary_percent": 150}, "serving.canary_percent = 150"),
        ({"max_batch_size": 0}, "serving.max_batch_size = 0"),
        ({"tls_cert": "c.pem"}, "set both tls_cert and tls_key"),
        ({"request_log_sample_rate": 2}, "serving.request_log_sample_rate = 2"),
        ({"log_payloads": "yes"}, "serving.log_payloads = 'yes'"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            serving_from_dict(raw)


def test_sampling_without_a_log_folder_is_refused(registry: Registry):
    with pytest.raises(ConfigError, match="--request-log DIR"):
        build(registry.root, ServingConfig(request_log_sample_rate=0.1))


# -- the command ------------------------------------------------------------------------------


def test_cli_serve_refuses_an_open_bind_and_serves_a_registry(registry: Registry, tmp_path: Path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("EVERGREEN_API_KEYS", None)
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "evergreen",
            "serve",
            "--registry",
            str(registry.root),
            "--host",
            "0.0.0.0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "not a loopback address, so API keys are required" in refused.stderr

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # With a config: the registry and the request log live under the pipeline root.
    root = registry.root.parent
    config = tmp_path / "evergreen.toml"
    config.write_text(
        f'[pipeline]\nname = "{MODEL}"\nroot = "{root}"\n'
        '[data]\npattern = "data/span-{SPAN}/*.csv"\nlabel = "score"\n'
        f'[serving]\nport = {port}\nrequest_log_sample_rate = 1.0\naudit_log = "audit.jsonl"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "evergreen", "serve", "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        r = httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": ["tea"]})
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"serving {MODEL} from {registry.root} on http://127.0.0.1:{port}" in out
    assert json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])["status"] == 200
    day = dt.datetime.now(dt.UTC).date().isoformat()
    logged = (root / "serving" / "requests" / MODEL / f"{day}.jsonl").read_text().splitlines()
    assert json.loads(logged[-1])["inputs"] == {"text": "tea"}


# -- other signatures: tabular columns and image bytes ----------------------------------------


@pytest.fixture(scope="module")
def generic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Two hand-made SavedModels: 'churn' (float, int and string columns), 'photos' (bytes)."""
    folder = tmp_path_factory.mktemp("generic")
    registry = Registry(folder / "registry")
    publish_generic(registry, folder)
    settings = ServingConfig(port=0, audit_log=os.devnull)
    with (
        ServerThread(build(registry.root, settings), settings) as running,
        httpx.Client(base_url=running.url) as client,
    ):
        yield client


def test_tabular_rows_columns_and_v2_tensors(generic_server: httpx.Client):
    rows = [
        {"minutes": 10.0, "calls": 2, "plan": "gold"},
        {"minutes": 4, "calls": 0, "plan": "basic"},
    ]
    r = generic_server.post("/v1/models/churn:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [107.0, 2.0]}  # one output: bare values
    columns = {"minutes": [10.0, 4], "calls": [2, 0], "plan": ["gold", "basic"]}
    assert generic_server.post("/v1/models/churn:predict", json={"inputs": columns}).json() == {
        "outputs": [107.0, 2.0]
    }
    v2 = generic_server.post(
        "/v2/models/churn/infer",
        json={
            "inputs": [
                {"name": "minutes", "shape": [2], "datatype": "FP32", "data": [10.0, 4]},
                {"name": "calls", "shape": [2], "datatype": "INT64", "data": [2, 0]},
                {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["gold", "basic"]},
            ]
        },
    )
    assert v2.json()["outputs"] == [
        {"name": "score", "shape": [2], "datatype": "FP32", "data": [107.0, 2.0]}
    ]

    for body, message in [
        ({"instances": [{"minutes": 1.0, "calls": 2}]}, "missing input(s) 'plan'"),
        (
            {"instances": [{"minutes": "ten", "calls": 2, "plan": "gold"}]},
            "input 'minutes' (instances) expects numbers (float32); value 0 is str 'ten'",
        ),
        (
            {"instances": [{"minutes": 1.0, "calls": 2.5, "plan": "gold"}]},
            "expects whole numbers (int64); value 0 is float 2.5",
        ),
        (
            {"instances": ["gold"]},
            "row 0 of 'instances' must be an object with the inputs calls, minutes, plan",
        ),
        (
            {"inputs": {"minutes": [1.0, 2.0], "calls": [1], "plan": ["a", "b"]}},
            "same number of rows: calls has 1, minutes has 2, plan has 2",
        ),
    ]:
        bad = generic_server.post("/v1/models/churn:predict", json=body)
        assert bad.status_code == 400 and message in bad.json()["error"], bad.json()


def test_bytes_inputs_take_b64_and_bytes_outputs_return_b64(generic_server: httpx.Client):
    import base64

    raw = bytes(range(256))  # not UTF-8: only b64 can carry it
    r = generic_server.post(
        "/v1/models/photos:predict", json={"instances": [{"b64": base64.b64encode(raw).decode()}]}
    )
    assert r.status_code == 200, r.text
    prediction = r.json()["predictions"][0]
    assert prediction["length"] == 256
    assert base64.b64decode(prediction["echo_bytes"]["b64"]) == raw
    plain = generic_server.post("/v1/models/photos:predict", json={"instances": ["abc"]}).json()
    assert plain["predictions"][0]["echo_bytes"] == {
        "b64": base64.b64encode(b"abc").decode()
    }  # *_bytes: always b64


def test_serving_public_api_is_pinned():
    import evergreen.serving

    assert sorted(evergreen.serving.__all__) == [
        "ApiKeys",
        "DynamicBatcher",
        "RequestLog",
        "ServerThread",
        "VERSION_HEADER",
        "build",
        "check_settings",
        "create_app",
        "is_loopback",
        "serve",
    ]


def test_the_server_takes_the_c_http_parser_and_uvloop_when_installed():
    from evergreen.serving.server import http_stack

    stack = http_stack()
    assert stack["http"] == ("httptools" if importlib.util.find_spec("httptools") else "h11")
    assert stack["loop"] == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
