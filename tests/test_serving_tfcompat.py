"""TF Serving and KServe clients, unchanged, against the server: the V2 binary tensor and
classification extensions (``tritonclient.http``'s default calls), TF Serving's Classify and
Regress REST APIs over the exported classification signature, and metadata parsed back into
TF Serving's own ``SignatureDefMap`` proto.

Every answer is compared with the JSON ``:predict`` path on the same rows.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from evergreen.config import ServingConfig
from evergreen.registry import Registry
from evergreen.serving import ServerThread, build
from tests.conftest import float_differences
from tests.serving_support import MODEL, Exports, publish, publish_generic, shared_exports

TEXTS = ["Great coffee, would buy again!", "Stale and awful.", "ok", ""]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def running(exports: Exports, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("tfcompat")
    registry = Registry(folder / "registry")
    publish(registry, exports, 0)
    publish_generic(registry, folder)
    settings = ServingConfig(port=0, audit_log=os.devnull, max_body_bytes=200_000)
    with ServerThread(build(registry.root, settings), settings) as server:
        yield server.url


@pytest.fixture(scope="module")
def http(running: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running, timeout=60) as client:
        yield client


def predict_json(http: httpx.Client, model: str, instances: list) -> list[dict]:
    r = http.post(f"/v1/models/{model}:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


# -- V2 binary tensor extension, with tritonclient ---------------------------------------------


@pytest.fixture(scope="module")
def triton(running: str):
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=running.removeprefix("http://"))
    yield httpclient, client
    client.close()


def test_tritonclient_default_binary_call_matches_json(triton, http: httpx.Client):
    httpclient, client = triton
    assert {"binary_tensor_data", "classification"} <= set(
        client.get_server_metadata()["extensions"]
    )
    text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))  # binary
    outputs = [
        httpclient.InferRequestedOutput("scores"),
        httpclient.InferRequestedOutput("classes"),
    ]
    result = client.infer(MODEL, [text], outputs=outputs)
    expected = predict_json(http, MODEL, TEXTS)
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (len(TEXTS), 2)
    np.testing.assert_array_equal(scores, np.array([p["scores"] for p in expected], np.float32))
    classes = result.as_numpy("classes")
    assert [[c.decode() for c in row] for row in classes] == [p["classes"] for p in expected]
    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    every = client.infer(MODEL, [text])
    np.testing.assert_array_equal(every.as_numpy("scores"), scores)


def test_tritonclient_binary_numbers_and_strings_match_json(triton, http: httpx.Client):
    httpclient, client = triton
    minutes = np.array([1.5, 20.25, -3.0], dtype=np.float32)
    calls = np.array([0, 7, 2**40], dtype=np.int64)
    plan = np.array([b"gold", b"basic", "caf\u00e9".encode()], dtype=object)
    inputs = []
    for name, array, datatype in (
        ("minutes", minutes, "FP32"),
        ("calls", calls, "INT64"),
        ("plan", plan, "BYTES"),
    ):
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("churn", inputs, outputs=[httpclient.InferRequestedOutput("score")])
    rows = [
        {"minutes": float(m), "calls": int(c), "plan": p.decode()}
        for m, c, p in zip(minutes, calls, plan, strict=True)
    ]
    expected = np.array(predict_json(http, "churn", rows), dtype=np.float32)
    np.testing.assert_array_equal(result.as_numpy("score"), expected)
    # The same call in JSON (binary_data=False both ways) answers the same.
    for tensor, array in zip(inputs, (minutes, calls, plan), strict=True):
        tensor.set_data_from_numpy(array, binary_data=False)
    plain = client.infer(
        "churn", inputs, outputs=[httpclient.InferRequestedOutput("score", binary_data=False)]
    )
    np.testing.assert_array_equal(plain.as_numpy("score"), expected)


def test_tritonclient_classification_extension(triton, http: httpx.Client):
    httpclient, client = triton
    text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    expected = predict_json(http, MODEL, TEXTS)
    for binary in (True, False):
        out = httpclient.InferRequestedOutput("scores", binary_data=binary, class_count=2)
        top = client.infer(MODEL, [text], outputs=[out]).as_numpy("scores")
        assert top.shape == (len(TEXTS), 2)
        for row, want in zip(top, expected, strict=True):
            # binary: bytes; JSON: str (tritonclient keeps what the wire had)
            parsed = [(e.decode() if isinstance(e, bytes) else e).split(":", 2) for e in row]
            order = np.argsort(-np.array(want["scores"]), kind="stable")
            assert [int(index) for _, index, _ in parsed] == list(order)
            assert [label for *_, label in parsed] == [want["classes"][i] for i in order]
            for score, index, _ in parsed:
                assert float(score) == pytest.approx(want["scores"][int(index)], abs=1e-6)
    one = httpclient.InferRequestedOutput("scores", class_count=1)
    assert client.infer(MODEL, [text], outputs=[one]).as_numpy("scores").shape == (len(TEXTS), 1)


def binary_body(header: dict, *parts: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(parts), {"Inference-Header-Content-Length": str(len(head))}


def strings(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def text_input(size: int, shape: list[int] | None = None) -> dict:
    return {
        "name": "text",
        "shape": shape or [1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": size},
    }


BAD_BINARY = [
    # (header, binary part, header length override, what the message names)
    ({"inputs": [text_input(7)]}, strings(b"abc"), "0", "Inference-Header-Content-Length"),
    ({"inputs": [text_input(7)]}, strings(b"abc"), "999999", "Inference-Header-Content-Length"),
    ({"inputs": [text_input(7)]}, strings(b"abc"), "x1", "Inference-Header-Content-Length"),
    ({"inputs": [text_input(99)]}, strings(b"abc"), None, "goes beyond"),
    ({"inputs": [text_input(3)]}, strings(b"abc"), None, "add up"),
    ({"inputs": [text_input(7)]}, strings(b"abc") + b"zz", None, "add up"),
    ({"inputs": [text_input(7, [2])]}, strings(b"abc"), None, "at least 8 bytes"),
    ({"inputs": [text_input(7)]}, struct.pack("<I", 50) + b"abc", None, "claims 50 bytes"),
    ({"inputs": [text_input(-1)]}, b"", None, "binary_data_size"),
    ({"inputs": [text_input(True)]}, b"", None, "binary_data_size"),
    ({"inputs": [{**text_input(7), "data": ["a"]}]}, strings(b"abc"), None, "both"),
    ({"inputs": [{**text_input(7), "parameters": []}]}, strings(b"abc"), None, "data"),
]


@pytest.mark.parametrize("header, binary, length, message", BAD_BINARY)
def test_malformed_binary_bodies_are_400_naming_the_problem(
    http: httpx.Client, header: dict, binary: bytes, length: str | None, message: str
):
    body, headers = binary_body(header, binary)
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    r = http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_binary_numbers_with_wrong_sizes_are_400(http: httpx.Client):
    tensors = [
        {
            "name": "minutes",
            "shape": [2],
            "datatype": "FP32",
            "parameters": {"binary_data_size": 4},
        },
        {
            "name": "calls",
            "shape": [2],
            "datatype": "INT64",
            "parameters": {"binary_data_size": 16},
        },
        {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
    ]
    body, headers = binary_body({"inputs": tensors}, b"\0" * 4, b"\0" * 16)
    r = http.post("/v2/models/churn/infer", content=body, headers=headers)
    assert r.status_code == 400 and "needs 8 bytes" in r.json()["error"]
    tensors[0]["parameters"]["binary_data_size"] = 8
    body, headers = binary_body(
        {"inputs": tensors, "outputs": [{"name": "score", "parameters": {"classification": 2}}]},
        np.array([1.0, 2.0], "<f4").tobytes(),
        np.array([3, 4], "<i8").tobytes(),
    )
    r = http.post("/v2/models/churn/infer", content=body, headers=headers)
    assert r.status_code == 400 and "cannot be classified" in r.json()["error"]
    del body
    body, headers = binary_body(
        {"inputs": tensors},
        np.array([1.0, 2.0], "<f4").tobytes(),
        np.array([3, 4], "<i8").tobytes(),
    )
    r = http.post("/v2/models/churn/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [3.5, 5.0]


# -- TF Serving's Classify / Regress REST APIs and metadata -------------------------------------


def test_classify_uses_the_classification_signature_and_answers_results(http: httpx.Client):
    expected = predict_json(http, MODEL, TEXTS)
    r = http.post(
        f"/v1/models/{MODEL}:classify",
        json={"signature_name": "classification", "examples": [{"text": t} for t in TEXTS]},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(TEXTS)
    for pairs, want in zip(results, expected, strict=True):
        assert [label for label, _ in pairs] == want["classes"]
        assert [score for _, score in pairs] == pytest.approx(want["scores"], abs=1e-6)
    # No signature_name: the classification signature too; a list value and b64 bytes are
    # tf.Example values; context features go into every example, the example's own winning.
    default = http.post(
        f"/v1/models/{MODEL}:classify",
        json={
            "context": {"text": "ignored"},
            "examples": [{"text": [TEXTS[0]]}, {"text": {"b64": "U3RhbGUgYW5kIGF3ZnVsLg=="}}],
        },
    ).json()["results"]
    # Equal up to float error: scores of a batch of 2 differ from the batch of all TEXTS in
    # their last bits on some CPUs (3e-8 on an AMD EPYC with AVX2).
    assert float_differences(default, results[:2], 1e-6) == []
    context = http.post(
        f"/v1/models/{MODEL}:classify", json={"context": {"text": TEXTS[1]}, "examples": [{}]}
    ).json()["results"]
    assert float_differences(context, results[1:2], 1e-6) == []


def test_regress_answers_the_second_class_probability(http: httpx.Client):
    expected = predict_json(http, MODEL, TEXTS)
    r = http.post(f"/v1/models/{MODEL}:regress", json={"examples": [{"text": t} for t in TEXTS]})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == pytest.approx([p["scores"][1] for p in expected], abs=1e-6)
    refused = http.post("/v1/models/churn:regress", json={"examples": [{"minutes": 1.0}]})
    assert refused.status_code == 400 and "not a regression signature" in refused.json()["error"]
    bad = http.post(f"/v1/models/{MODEL}:classify", json={"examples": [{"text": [1, "a"]}]})
    assert bad.status_code == 400 and "feature 'text'" in bad.json()["error"]


def test_metadata_parses_back_into_tf_servings_proto(http: httpx.Client, exports: Exports):
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    from evergreen.models.tfserving_signatures import signature_defs

    body = http.get(f"/v1/models/{MODEL}/metadata").json()
    parsed = json_format.ParseDict(
        body["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap()
    )
    assert parsed == signature_defs(exports.paths[0])  # exactly what saved_model.pb holds
    classification = parsed.signature_def["classification"]
    assert classification.method_name == "tensorflow/serving/classify"
    assert classification.inputs["inputs"].dtype == 7  # DT_STRING: serialized tf.Example
    assert classification.inputs["inputs"].name == "classification_inputs:0"
    assert {k: v.dtype for k, v in classification.outputs.items()} == {"classes": 7, "scores": 1}
    assert parsed.signature_def["regression"].method_name == "tensorflow/serving/regress"
    # TF's own check of the classify/regress contract (inputs: one DT_STRING "inputs"; classes
    # DT_STRING, scores DT_FLOAT; outputs DT_FLOAT), the rules TF Serving's Classify applies.
    import tensorflow as tf

    for name in ("classification", "regression"):
        assert tf.compat.v1.saved_model.is_valid_signature(parsed.signature_def[name]), name


# -- TF Serving warm-up records ------------------------------------------------------------------


def test_warmup_records_are_read_back_with_the_protos_and_served(
    exports: Exports, tmp_path, http: httpx.Client
):
    from evergreen import warmup

    # A request log of real rows (two days; the newest lines come first), one foreign line.
    logs = tmp_path / "requests" / MODEL
    logs.mkdir(parents=True)
    lines = [{"signature": "serving_default", "inputs": {"text": t}} for t in TEXTS[:3]]
    (logs / "2026-01-01.jsonl").write_text(json.dumps(lines[0]) + "\n")
    (logs / "2026-01-02.jsonl").write_text(
        "\n".join(json.dumps(x) for x in [*lines[1:], {"signature": "tokenize", "inputs": {}}])
        + "\n{cut"
    )
    rows = warmup.logged_rows(logs, ["text"])
    assert rows == [{"text": TEXTS[2]}, {"text": TEXTS[1]}, {"text": TEXTS[0]}]

    registry = Registry(tmp_path / "registry")
    published = registry.publish(
        MODEL,
        exports.paths[0],
        {"lineage": {"candidate": 7}},
        add_files=lambda folder: warmup.write_warmup_requests(folder, MODEL, rows),
    )
    # Covered by the digests; a resumed publish of the same candidate is still recognised.
    assert str(warmup.WARMUP_FILE) in published.manifest["files"]
    registry.verify(MODEL, published.version)
    again = registry.publish(MODEL, exports.paths[0], {"lineage": {"candidate": 7}})
    assert again.version == published.version

    requests = warmup.read_warmup_requests(published.path)
    assert len(requests) == 4  # one per row, then the three as one batch
    assert all(r.model_spec.name == MODEL for r in requests)
    assert all(r.model_spec.signature_name == "serving_default" for r in requests)
    batch = warmup.request_arrays(requests[-1])["text"]
    assert [b.decode() for b in batch] == [r["text"] for r in rows]
    # Replayed through our server, each answers what the same rows answer as JSON.
    for request in requests:
        texts = [b.decode() for b in warmup.request_arrays(request)["text"]]
        r = http.post(f"/v1/models/{MODEL}:predict", json={"inputs": {"text": texts}})
        assert r.status_code == 200 and len(r.json()["outputs"]["scores"]) == len(texts)


def test_warmup_from_eval_rows_maps_columns_and_fills_missing_values(tmp_path):
    from evergreen import warmup

    rows = warmup.eval_rows(
        [{"review": "fine tea", "score": "5"}, {"review": None}] * 10, {"text": "review"}
    )
    assert len(rows) == warmup.MAX_ROWS and rows[0] == {"text": "fine tea"}
    assert warmup._column([r["text"] for r in rows[:2]], "string").tolist() == [b"fine tea", b""]
    assert warmup._column([1.5, None], "float32").tolist()[0] == 1.5
    png = b"\x89PNG\r\n"  # image rows hold bytes: kept as they are
    assert warmup._column([png, {"b64": "YQ=="}], "string").tolist() == [png, b"a"]


@pytest.mark.slow
def test_a_real_evergreen_serve_process_answers_tritonclient_and_classify(
    exports: Exports, tmp_path, http: httpx.Client
):
    """`evergreen serve` as a process, as a KServe or TF Serving user would start it."""
    import socket
    import subprocess
    import sys
    import time

    httpclient = pytest.importorskip("tritonclient.http")
    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "evergreen", "serve", "--registry", str(registry.root)]
        + ["--port", str(port), "--grpc-port", "0", "--audit-log", os.devnull],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(1200):  # a loaded 2-core machine: up to two minutes to load TF
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
        scores = client.infer(MODEL, [text]).as_numpy("scores")  # binary in, binary out
        client.close()
        expected = predict_json(http, MODEL, TEXTS)  # the in-process server, same export
        np.testing.assert_allclose(scores, [p["scores"] for p in expected], atol=1e-6)
        classified = httpx.post(
            f"{url}/v1/models/{MODEL}:classify", json={"examples": [{"text": TEXTS[0]}]}
        ).json()["results"]
        assert classified[0][0][1] == pytest.approx(expected[0]["scores"][0], abs=1e-6)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


def test_grpc_classify_protos_give_the_rest_answers(http: httpx.Client, exports: Exports):
    """The functions the gRPC server calls: Input protos in, ClassificationResult out."""
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import input_pb2

    from evergreen.serving import classify

    def example(text: str) -> example_pb2.Example:
        e = example_pb2.Example()
        e.features.feature["text"].bytes_list.value.append(text.encode())
        return e

    plain = input_pb2.Input()
    plain.example_list.examples.extend([example(TEXTS[0]), example(TEXTS[1])])
    with_context = input_pb2.Input()
    with_context.example_list_with_context.context.CopyFrom(example("ignored"))
    with_context.example_list_with_context.examples.extend(
        [example(TEXTS[0]), example_pb2.Example()]
    )
    serialized = classify.serialized_from_input(plain)
    merged = classify.serialized_from_input(with_context)
    assert example_pb2.Example.FromString(merged[0]) == example(TEXTS[0])  # the example wins
    assert example_pb2.Example.FromString(merged[1]) == example("ignored")  # else the context
    with pytest.raises(classify.BadRequest):
        classify.serialized_from_input(input_pb2.Input())

    import tensorflow as tf

    rest = http.post(
        f"/v1/models/{MODEL}:classify", json={"examples": [{"text": t} for t in TEXTS[:2]]}
    ).json()["results"]
    served = tf.saved_model.load(str(exports.paths[0]))  # what version 1 serves
    outputs = served.signatures["classification"](inputs=tf.constant(list(serialized)))
    proto = classify.classification_result_proto({k: v.numpy() for k, v in outputs.items()})
    assert [[(c.label, c.score) for c in row.classes] for row in proto.classifications] == [
        [(label, pytest.approx(score, abs=1e-6)) for label, score in pairs] for pairs in rest
    ]
    regressed = served.signatures["regression"](inputs=tf.constant(list(serialized)))
    values = classify.regression_result_proto({"outputs": regressed["outputs"].numpy()})
    assert [r.value for r in values.regressions] == pytest.approx([p[1][1] for p in rest], abs=1e-6)


def test_compressed_requests_inflate_within_the_body_limit(triton, http: httpx.Client):
    import gzip

    httpclient, client = triton
    text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    plain = client.infer(MODEL, [text]).as_numpy("scores")
    for algorithm in ("gzip", "deflate"):
        packed = client.infer(MODEL, [text], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(packed.as_numpy("scores"), plain)
    body = json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    )
    bad = [
        ({"Content-Encoding": "br"}, body.encode(), 400, "not supported"),
        ({"Content-Encoding": "gzip"}, body.encode(), 400, "not valid gzip"),
        ({"Content-Encoding": "gzip"}, gzip.compress(body.encode())[:-12], 400, "cut short"),
        # 300 kB of spaces in 400 bytes: inflating stops at max_body_bytes (200,000 here).
        (
            {"Content-Encoding": "gzip"},
            gzip.compress(b" " * 300_000 + body.encode()),
            413,
            "inflates",
        ),
    ]
    for headers, content, status, message in bad:
        r = http.post(f"/v2/models/{MODEL}/infer", content=content, headers=headers)
        assert r.status_code == status and message in r.json()["error"], r.text
