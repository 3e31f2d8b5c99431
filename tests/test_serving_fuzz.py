"""Property-based fuzzing of both HTTP APIs: whatever comes, the answer is never a 5xx or a hang.

Hypothesis draws bodies shaped like each API's (right keys with wrong values, wrong keys,
any JSON anywhere), raw tokens Python's json takes but the server must refuse (integers of
over 4300 digits, lone surrogates, deep nesting, NaN), raw bytes, and paths with any text for
the model, version and label. Examples are bounded and derandomized, so a run is repeatable;
the deadline is off (a loaded 2-core machine is slow, and a hang is caught by the client's
timeout instead).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evergreen.config import ServingConfig
from evergreen.registry import Registry
from evergreen.serving import ServerThread, build
from tests.serving_support import Exports, publish, publish_generic, shared_exports

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MODELS = ["reviews", "churn", "photos"]
INPUTS = ["text", "minutes", "calls", "plan", "image_bytes"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def client(exports: Exports, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("fuzz")
    registry = Registry(folder / "registry")
    publish(registry, exports, 0)
    publish_generic(registry, folder)
    config = ServingConfig(port=0, audit_log=os.devnull, max_rows_per_request=64)
    with (
        ServerThread(build(registry.root, config), config) as running,
        httpx.Client(base_url=running.url, timeout=60) as http,
    ):
        yield http


# -- strategies ------------------------------------------------------------------------------

# Any text; and text with lone surrogates (json.dumps escapes them as \udxxx), one kind of
# leaf among several so that most bodies get past the check for them. (A list joined:
# st.text would merge the two alphabets into one, where surrogates are rare.)
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
TEXT = st.text(max_size=12)
SURROGATE_TEXT = st.lists(st.one_of(st.characters(), SURROGATE), min_size=1, max_size=6).map(
    "".join
)
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    SURROGATE_TEXT,
    st.sampled_from(INPUTS + ["", "b64", "NaN", "Infinity", "BYTES", "FP32", "INT64"]),
    st.fixed_dictionaries({"b64": st.one_of(TEXT, st.sampled_from(["YQ==", "%%", ""]))}),
)
JSON = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(TEXT, st.sampled_from(INPUTS)), inner, max_size=4)
    ),
    max_leaves=12,
)
ROWS = st.one_of(
    JSON,
    st.lists(JSON, max_size=6),
    st.lists(TEXT, min_size=1, max_size=80),
    st.lists(st.one_of(TEXT, SURROGATE_TEXT), min_size=1, max_size=4),
)
SIGNATURE = st.one_of(st.sampled_from(["serving_default", "classify", "tokenize", ""]), JSON)

COLUMNS = st.one_of(ROWS, st.dictionaries(st.sampled_from(INPUTS), ROWS, max_size=3))
# Mostly one well-formed key with any value (so the value is what gets checked), some of
# every key optional (so key handling is too).
V1_BODY = st.one_of(
    st.fixed_dictionaries({"instances": ROWS}),
    st.fixed_dictionaries({"inputs": COLUMNS}),
    st.fixed_dictionaries(
        {},
        optional={
            "instances": ROWS,
            "inputs": COLUMNS,
            "signature_name": SIGNATURE,
            "instance": JSON,
        },
    ),
)
CLASSIFY_BODY = st.fixed_dictionaries(
    {},
    optional={
        "examples": st.one_of(JSON, st.lists(st.dictionaries(st.sampled_from(INPUTS), JSON))),
        "context": JSON,
        "signature_name": SIGNATURE,
    },
)
TENSOR_FIELDS = {
    "name": st.one_of(st.sampled_from(INPUTS), JSON),
    "shape": st.one_of(
        st.lists(st.integers(min_value=-2, max_value=6), max_size=3),
        st.lists(st.integers(), max_size=3),
        JSON,
    ),
    "datatype": st.one_of(st.sampled_from(["BYTES", "FP32", "INT64", "BOOL", "FP16"]), JSON),
    "data": st.one_of(st.lists(LEAF, max_size=8), JSON),
}
# Mostly whole tensors (every field present, so the values are what is checked), some partial.
TENSOR = st.one_of(
    st.fixed_dictionaries(TENSOR_FIELDS, optional={"parameters": JSON}),
    st.fixed_dictionaries({}, optional=TENSOR_FIELDS),
)
V2_OPTIONAL = {
    "id": st.one_of(TEXT, JSON),
    "parameters": st.one_of(st.fixed_dictionaries({"signature_name": SIGNATURE}), JSON),
    "outputs": st.one_of(st.lists(st.fixed_dictionaries({"name": JSON}), max_size=3), JSON),
}
V2_BODY = st.one_of(
    st.fixed_dictionaries({"inputs": st.lists(TENSOR, min_size=1, max_size=3)}),
    st.fixed_dictionaries(
        {"inputs": st.lists(TENSOR, min_size=1, max_size=3)}, optional=V2_OPTIONAL
    ),
    st.fixed_dictionaries({}, optional={"inputs": JSON, **V2_OPTIONAL}),
)
# Raw JSON text Python parses but the server must refuse, put where a value goes.
RAW_TOKEN = st.one_of(
    st.integers(min_value=4301, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=30, max_value=3000).map(lambda n: "[" * n + '"a"' + "]" * n),
    st.integers(min_value=30, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(['"\\ud800"', '"\\udfff"', '"a\\udc00b"', "NaN", "-Infinity", "1e999"]),
)
TEMPLATES = [
    ("/v1/models/{m}:predict", '{"instances": [@]}'),
    ("/v1/models/{m}:predict", '{"inputs": {"text": [@]}}'),
    ("/v1/models/{m}:predict", '{"signature_name": @, "instances": ["a"]}'),
    ("/v1/models/{m}:predict", '{"instances": [{"minutes": @, "calls": 1, "plan": "a"}]}'),
    ("/v1/models/{m}:classify", '{"examples": [{"text": @}], "context": {}}'),
    ("/v2/models/{m}/infer", '{"id": @, "inputs": []}'),
    (
        "/v2/models/{m}/infer",
        '{"inputs": [{"name": "text", "shape": [@], "datatype": "BYTES", "data": ["a"]}]}',
    ),
    (
        "/v2/models/{m}/infer",
        '{"inputs": [{"name": @, "shape": [1], "datatype": "BYTES", "data": [@]}]}',
    ),
]
SEGMENT = st.one_of(
    st.sampled_from(["1", "2", "0", "²", "٣", "-1", "1e3", "champion", "canary", "9" * 30]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10),
    st.integers(min_value=4301, max_value=5000).map(lambda n: "1" * n),
)
PATHS = [
    ("GET", "/v1/models/{m}"),
    ("GET", "/v1/models/{m}/versions/{v}"),
    ("GET", "/v1/models/{m}/labels/{v}/metadata"),
    ("POST", "/v1/models/{m}/versions/{v}:predict"),
    ("POST", "/v1/models/{m}/labels/{v}:classify"),
    ("GET", "/v2/models/{m}/versions/{v}"),
    ("GET", "/v2/models/{m}/versions/{v}/ready"),
    ("POST", "/v2/models/{m}/versions/{v}/infer"),
]
MODEL = st.one_of(st.sampled_from(MODELS), SEGMENT)


def encode(body: Any) -> bytes:
    # allow_nan: NaN/Infinity tokens are what TF Serving clients send; surrogates escaped.
    return json.dumps(body, allow_nan=True).encode("ascii")


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert "error" in response.json()


def post(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


# -- properties ------------------------------------------------------------------------------


@FUZZ
@given(model=st.sampled_from(MODELS), body=V1_BODY)
def test_v1_predict_bodies_never_get_a_5xx(client: httpx.Client, model: str, body: dict):
    check(post(client, f"/v1/models/{model}:predict", encode(body)))


@FUZZ
@given(model=st.sampled_from(MODELS), body=CLASSIFY_BODY)
def test_v1_classify_bodies_never_get_a_5xx(client: httpx.Client, model: str, body: dict):
    check(post(client, f"/v1/models/{model}:classify", encode(body)))


@FUZZ
@given(model=st.sampled_from(MODELS), body=V2_BODY)
def test_v2_infer_bodies_never_get_a_5xx(client: httpx.Client, model: str, body: dict):
    check(post(client, f"/v2/models/{model}/infer", encode(body)))


@FUZZ
@given(
    model=st.sampled_from(MODELS),
    template=st.sampled_from(TEMPLATES),
    tokens=st.lists(RAW_TOKEN, min_size=2, max_size=2),
)
def test_raw_tokens_python_parses_but_the_server_refuses_never_get_a_5xx(
    client: httpx.Client, model: str, template: tuple[str, str], tokens: list[str]
):
    path, body = template
    for token in tokens:
        body = body.replace("@", token, 1)
    check(post(client, path.format(m=model), body.encode("ascii")))


@FUZZ
@given(
    model=st.sampled_from(MODELS),
    raw=st.one_of(
        st.binary(max_size=64),
        V1_BODY.map(encode).flatmap(
            lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda i: b[:i] + b"\xff" + b[i:])
        ),
        V2_BODY.map(encode).flatmap(lambda b: st.integers(0, len(b)).map(lambda i: b[:i])),
    ),
)
def test_raw_bytes_and_cut_bodies_never_get_a_5xx(client: httpx.Client, model: str, raw: bytes):
    check(post(client, f"/v1/models/{model}:predict", raw))
    check(post(client, f"/v2/models/{model}/infer", raw))


@FUZZ
@given(route=st.sampled_from(PATHS), model=MODEL, segment=SEGMENT)
def test_paths_with_any_model_version_or_label_never_get_a_5xx(
    client: httpx.Client, route: tuple[str, str], model: str, segment: str
):
    method, template = route
    path = template.format(m=quote(model, safe=""), v=quote(segment, safe=""))
    body = b'{"instances": ["a"]}' if path.endswith(("predict", "classify")) else None
    if path.endswith("/infer"):
        body = encode(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
        )
    check(client.request(method, path, content=body))


# The V2 binary tensor extension: a JSON header of Inference-Header-Content-Length bytes, then
# raw tensor bytes. Inputs claim any binary_data_size; the header length is right, off, or junk.
BINARY_TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(INPUTS),
        "shape": st.lists(st.integers(min_value=-1, max_value=8), max_size=3),
        "datatype": st.sampled_from(["BYTES", "FP32", "INT64", "BOOL", "FP16", "UINT8", "X"]),
        "parameters": st.fixed_dictionaries(
            {"binary_data_size": st.one_of(st.integers(min_value=-2, max_value=64), LEAF)}
        ),
    }
)
BINARY_OUTPUT = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["scores", "classes", "score", "length", "echo_bytes", "x"]),
        "parameters": st.fixed_dictionaries(
            {},
            optional={
                "binary_data": st.one_of(st.booleans(), LEAF),
                "classification": st.one_of(st.integers(min_value=-1, max_value=5), LEAF),
            },
        ),
    }
)


@FUZZ
@given(
    model=st.sampled_from(MODELS),
    tensors=st.lists(BINARY_TENSOR, min_size=1, max_size=3),
    outputs=st.one_of(st.none(), st.lists(BINARY_OUTPUT, max_size=2)),
    data=st.binary(max_size=96),
    shift=st.one_of(st.just(0), st.integers(min_value=-40, max_value=200)),
    junk=st.one_of(st.none(), st.sampled_from(["", "x", "-1", "1e3", "9" * 30])),
)
def test_binary_extension_bodies_never_get_a_5xx(
    client: httpx.Client,
    model: str,
    tensors: list[dict],
    outputs: list[dict] | None,
    data: bytes,
    shift: int,
    junk: str | None,
):
    header: dict[str, Any] = {"inputs": tensors}
    if outputs is not None:
        header["outputs"] = outputs
    head = json.dumps(header, allow_nan=True).encode("ascii")
    length = junk if junk is not None else str(max(0, len(head) + shift))
    response = client.post(
        f"/v2/models/{model}/infer",
        content=head + data,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": length,
        },
    )
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert "error" in response.json()
