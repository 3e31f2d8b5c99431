"""Write requests.json: the corpus of malformed requests that tests/test_serving_limits.py
replays against a live server (every one must be answered 4xx, none 5xx, none hang).

Run from the repository root: ``python tests/bad_inputs/make_requests.py``. The corpus is
committed; this script says how it was made and regenerates it deterministically.

Each entry: ``id``, ``method``, ``path`` (percent-encoded ASCII, sent as is), ``body`` (text
sent as UTF-8) or ``body_b64`` (raw bytes), optionally ``headers`` (sent besides
Content-Type: the V2 binary extension's ``Inference-Header-Content-Length``), ``status`` (an exact code, or null: any 4xx) and
``message`` (a substring of the error, or null). Long paths and bodies are stored run-length
encoded, as ``[[text, times], ...]`` lists (``"[" * 100000`` is ``[["[", 100000]]``), so the
file stays small and readable; :func:`expand` (used by the test) joins them back. The
models are those of the limits test: ``reviews`` (one string input ``text``; signatures
``serving_default``, ``classify``, ``tokenize``) and ``churn`` (``minutes`` float32, ``calls``
int64, ``plan`` string), at the default ``serving.max_rows_per_request`` of 4096.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote

OUT = Path(__file__).with_name("requests.json")
MAX_ROWS = 4096

V1 = "/v1/models/reviews:predict"
V1_CLASSIFY = "/v1/models/reviews:classify"
V2 = "/v2/models/reviews/infer"
CHURN_V1 = "/v1/models/churn:predict"
CHURN_V2 = "/v2/models/churn/infer"
POST_ROUTES = [V1, V1_CLASSIFY, V2, CHURN_V1, CHURN_V2]

entries: list[dict[str, Any]] = []


_RUN = re.compile(r"(.{1,32}?)\1{15,}", re.DOTALL)


def compress(text: str) -> str | list[list[Any]]:
    """``text`` as is when short, else as [[piece, times], ...] runs."""
    if len(text) <= 512:
        return text
    parts: list[list[Any]] = []
    at = 0
    for run in _RUN.finditer(text):
        if run.start() > at:
            parts.append([text[at : run.start()], 1])
        unit = run.group(1)
        parts.append([unit, len(run.group(0)) // len(unit)])
        at = run.start() + len(run.group(0)) // len(unit) * len(unit)
    if at < len(text):
        parts.append([text[at:], 1])
    assert expand(parts) == text
    return parts


def expand(value: str | list[list[Any]]) -> str:
    """A path or body of the corpus as text (see :func:`compress`)."""
    return value if isinstance(value, str) else "".join(piece * times for piece, times in value)


def add(
    id: str,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    raw: str | None = None,
    raw_bytes: bytes | None = None,
    status: int | None = None,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    entry: dict[str, Any] = {"id": id, "method": method, "path": compress(path)}
    if headers:
        entry["headers"] = headers
    if raw_bytes is not None:
        entry["body_b64"] = base64.b64encode(raw_bytes).decode("ascii")
    elif raw is not None:
        entry["body"] = compress(raw)
    elif body is not None:
        entry["body"] = compress(json.dumps(body))
    entry["status"] = status
    entry["message"] = message
    entries.append(entry)


def v2_text(**tensor: Any) -> dict[str, Any]:
    base = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["good"]}
    base.update(tensor)
    return {"inputs": [base]}


def nest(depth: int, leaf: str = '"a"', open_: str = "[", close: str = "]") -> str:
    return open_ * depth + leaf + close * depth


def nest_objects(depth: int) -> str:
    return '{"a":' * depth + '"x"' + "}" * depth


# -- not JSON, not an object ----------------------------------------------------------------

NOT_JSON = {
    "empty": "",
    "spaces": "   \n",
    "open-brace": "{",
    "close-brace": "}",
    "open-bracket": "[",
    "truncated": '{"instances": ',
    "single-quotes": "{'instances': ['a']}",
    "trailing-comma": '{"instances": ["a",]}',
    "trailing-garbage": '{"instances": ["a"]} x',
    "two-objects": '{"instances": ["a"]}{"instances": ["a"]}',
    "nul": "\x00",
    "bare-word": "instances",
    "unquoted-key": '{instances: ["a"]}',
    "comment": '{"instances": ["a"] /* c */}',
    "bad-escape": '{"instances": ["\\x41"]}',
    "short-unicode-escape": '{"instances": ["\\u12"]}',
    "control-char-in-string": '{"instances": ["a\x01b"]}',
}
TOP_LEVEL = {"null": "null", "number": "1", "string": '"x"', "list": '["a"]', "true": "true"}
for route in POST_ROUTES:
    tag = route.strip("/").replace("/", "-").replace(":", "-")
    for name, raw in NOT_JSON.items():
        add(f"{tag}-{name}", route, raw=raw, status=400)
    for name, raw in TOP_LEVEL.items():
        add(f"{tag}-top-{name}", route, raw=raw, status=400, message="must be a JSON object")
    add(f"{tag}-invalid-utf8", route, raw_bytes=b'{"instances": ["\xff\xfe"]}', status=400)
    add(f"{tag}-truncated-utf8", route, raw_bytes=b'{"instances": ["\xe2\x82"]}', status=400)
    add(f"{tag}-latin1", route, raw_bytes='{"instances": ["café"]}'.encode("latin-1"), status=400)

# -- nested too deep (Python's parser fails near 1000 levels; walks fail earlier) ------------

DEPTHS = [33, 100, 500, 600, 700, 800, 900, 950, 990, 1000, 1100, 3000]
for depth in DEPTHS:
    add(f"deep-{depth}-top", V1, raw=nest(depth), status=400, message="nested")
    add(f"deep-{depth}-instances", V1, raw='{"instances": ' + nest(depth) + "}", status=400)
    add(
        f"deep-{depth}-columns",
        V1,
        raw='{"inputs": {"text": ' + nest(depth) + "}}",
        status=400,
    )
    add(
        f"deep-{depth}-signature",
        V1,
        raw='{"signature_name": ' + nest(depth) + ', "instances": ["a"]}',
        status=400,
    )
    add(f"deep-{depth}-objects", V1, raw=nest_objects(depth), status=400)
    add(
        f"deep-{depth}-v2-data",
        V2,
        raw='{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": '
        + nest(depth)
        + "}]}",
        status=400,
    )
    add(
        f"deep-{depth}-v2-id",
        V2,
        raw='{"id": ' + nest(depth) + ', "inputs": []}',
        status=400,
    )
    add(
        f"deep-{depth}-v2-parameters",
        V2,
        raw='{"parameters": ' + nest_objects(depth) + ', "inputs": []}',
        status=400,
    )
    add(
        f"deep-{depth}-classify-context",
        V1_CLASSIFY,
        raw='{"examples": [{"text": "a"}], "context": ' + nest_objects(depth) + "}",
        status=400,
    )
    add(f"deep-{depth}-unbalanced", V1, raw="[" * depth, status=400)
    add(
        f"deep-{depth}-churn-minutes",
        CHURN_V1,
        raw='{"instances": [{"minutes": ' + nest(depth, "1") + ', "calls": 1, "plan": "a"}]}',
        status=400,
    )

for depth in (20_000, 100_000):  # far beyond: only where the body starts
    add(f"deep-{depth}-top", V1, raw=nest(depth), status=400, message="nested")
    add(f"deep-{depth}-instances", V1, raw='{"instances": ' + nest(depth) + "}", status=400)

# -- lone surrogates (valid JSON escapes that are not Unicode) -------------------------------

SURROGATES = {"high": "\\ud800", "low": "\\udfff", "reversed": "\\udc00\\ud800", "end": "a\\ud83d"}
for name, esc in SURROGATES.items():
    s = f'"{esc}"'
    add(
        f"surrogate-{name}-instance",
        V1,
        raw='{"instances": [' + s + "]}",
        status=400,
        message="surrogate",
    )
    add(f"surrogate-{name}-row-key", V1, raw='{"instances": [{' + s + ': "a"}]}', status=400)
    add(f"surrogate-{name}-body-key", V1, raw="{" + s + ': ["a"]}', status=400)
    add(
        f"surrogate-{name}-signature",
        V1,
        raw='{"signature_name": ' + s + ', "instances": ["a"]}',
        status=400,
    )
    add(f"surrogate-{name}-columns", V1, raw='{"inputs": {"text": [' + s + "]}}", status=400)
    add(
        f"surrogate-{name}-classify",
        V1_CLASSIFY,
        raw='{"examples": [{"text": ' + s + "}]}",
        status=400,
    )
    add(
        f"surrogate-{name}-v2-name",
        V2,
        raw='{"inputs": [{"name": ' + s + ', "shape": [1], "datatype": "BYTES", "data": ["a"]}]}',
        status=400,
    )
    add(
        f"surrogate-{name}-v2-datatype",
        V2,
        raw='{"inputs": [{"name": "text", "shape": [1], "datatype": ' + s + ', "data": ["a"]}]}',
        status=400,
    )
    add(
        f"surrogate-{name}-v2-data",
        V2,
        raw='{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ['
        + s
        + "]}]}",
        status=400,
    )
    add(
        f"surrogate-{name}-v2-id",
        V2,
        raw='{"id": '
        + s
        + ', "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}',
        status=400,
    )
    add(
        f"surrogate-{name}-v2-output",
        V2,
        raw='{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": [{"name": '
        + s
        + "}]}",
        status=400,
    )
    add(
        f"surrogate-{name}-churn-plan",
        CHURN_V1,
        raw='{"instances": [{"minutes": 1, "calls": 1, "plan": ' + s + "}]}",
        status=400,
    )
for name, raw_surrogate in {"high": b"\xed\xa0\x80", "low": b"\xed\xbf\xbf"}.items():
    add(
        f"surrogate-bytes-{name}",
        V1,
        raw_bytes=b'{"instances": ["' + raw_surrogate + b'"]}',
        status=400,
    )
    add(
        f"surrogate-bytes-{name}-v2",
        V2,
        raw_bytes=b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["'
        + raw_surrogate
        + b'"]}]}',
        status=400,
    )

# -- numbers Python will not parse, or NumPy cannot hold -------------------------------------

add("int-50000-instance", V1, raw='{"instances": [' + "1" * 50_000 + "]}", status=400)
for digits in (4301, 5000):
    n = "1" * digits
    add(
        f"int-{digits}-instance",
        V1,
        raw='{"instances": [' + n + "]}",
        status=400,
        message="4300 digits",
    )
    add(
        f"int-{digits}-churn-minutes",
        CHURN_V1,
        raw='{"instances": [{"minutes": ' + n + ', "calls": 1, "plan": "a"}]}',
        status=400,
    )
    add(
        f"int-{digits}-churn-calls",
        CHURN_V1,
        raw='{"instances": [{"minutes": 1, "calls": ' + n + ', "plan": "a"}]}',
        status=400,
    )
    add(
        f"int-{digits}-v2-shape",
        V2,
        raw='{"inputs": [{"name": "text", "shape": ['
        + n
        + '], "datatype": "BYTES", "data": ["a"]}]}',
        status=400,
    )
    add(f"int-{digits}-v2-id", V2, raw='{"id": ' + n + ', "inputs": []}', status=400)
    add(
        f"int-{digits}-signature",
        V1,
        raw='{"signature_name": ' + n + ', "instances": ["a"]}',
        status=400,
    )
for digits in (20, 400, 4000):
    n = "9" * digits
    if digits > 20:  # 9e19 is a fine float32
        add(
            f"int-{digits}-churn-minutes-overflow",
            CHURN_V1,
            raw='{"instances": [{"minutes": ' + n + ', "calls": 1, "plan": "a"}]}',
            status=400,
            message="out of range",
        )
    add(
        f"int-{digits}-churn-calls-overflow",
        CHURN_V1,
        raw='{"instances": [{"minutes": 1, "calls": ' + n + ', "plan": "a"}]}',
        status=400,
        message="out of range",
    )
    add(
        f"int-{digits}-churn-v2-calls",
        CHURN_V2,
        raw='{"inputs": [{"name": "minutes", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "calls", "shape": [1], "datatype": "INT64", "data": ['
        + n
        + ']}, {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}',
        status=400,
    )
    add(
        f"int-{digits}-v2-shape",
        V2,
        raw='{"inputs": [{"name": "text", "shape": ['
        + n
        + '], "datatype": "BYTES", "data": ["a"]}]}',
        status=400,
    )
add("v2-shape-zero-by-huge", V2, v2_text(shape=[0, 10**30], data=[]), status=400)
add("v2-shape-zero-by-2-63", V2, v2_text(shape=[0, 2**63], data=[]), status=400)
add("v2-shape-rank-40", V2, v2_text(shape=[1] * 40, data=nest(39)), status=400)
add("v2-shape-rank-33-zero", V2, v2_text(shape=[0] * 33, data=[]), status=400)

# -- versions and names in paths ---------------------------------------------------------------

VERSIONS = {
    "superscript-2": "²",
    "superscript-1": "¹",
    "arabic-indic-3": "٣",
    "devanagari-1": "१",
    "math-bold-1": "𝟙",
    "circled-1": "①",
    "fullwidth-1": "１",
    "minus-1": "-1",
    "plus-1": "+1",
    "float": "1.0",
    "exponent": "1e3",
    "hex": "0x1",
    "space-before": " 1",
    "space-after": "1 ",
    "nan": "NaN",
    "infinity": "∞",
    "19-digits": "9" * 19,
    "4301-digits": "1" * 4301,
    "4400-digits": "9" * 4400,
    "letters": "latest",
    "nul": "\x00",
    "unknown": "7",
    "zero": "0",
}
for name, version in VERSIONS.items():
    v = quote(version, safe="")
    add(f"version-{name}-v1-status", f"/v1/models/reviews/versions/{v}", method="GET")
    add(f"version-{name}-v1-metadata", f"/v1/models/reviews/versions/{v}/metadata", method="GET")
    add(
        f"version-{name}-v1-predict",
        f"/v1/models/reviews/versions/{v}:predict",
        {"instances": ["a"]},
    )
    add(f"version-{name}-v2-model", f"/v2/models/reviews/versions/{v}", method="GET")
    add(f"version-{name}-v2-ready", f"/v2/models/reviews/versions/{v}/ready", method="GET")
    add(f"version-{name}-v2-infer", f"/v2/models/reviews/versions/{v}/infer", v2_text())
MODELS = {
    "unknown": "nope",
    "superscript": "²",
    "long": "m" * 5_000,
    "dot-dot": "..",
    "encoded-slash": "a%2Fb",
    "colon": "a:b",
    "cjk": "模型",
    "space": "reviews ",
    "nul": "\x00",
    "surrogate-escape": "%ED%A0%80",
}
for name, model in MODELS.items():
    m = model if "%" in model else quote(model, safe="")
    add(f"model-{name}-v1-predict", f"/v1/models/{m}:predict", {"instances": ["a"]})
    add(f"model-{name}-v1-status", f"/v1/models/{m}", method="GET")
    add(f"model-{name}-v2-infer", f"/v2/models/{m}/infer", v2_text())
    add(f"model-{name}-v2-ready", f"/v2/models/{m}/ready", method="GET")
for name, label in {"unknown": "prod", "superscript": "²", "empty": ""}.items():
    add(
        f"label-{name}",
        f"/v1/models/reviews/labels/{quote(label, safe='')}:predict",
        {"instances": ["a"]},
    )

# -- wrong types everywhere --------------------------------------------------------------------

JUNK = {
    "null": None,
    "true": True,
    "zero": 0,
    "minus-one": -1,
    "float": 1.5,
    "big-float": 1e308,
    "empty-string": "",
    "string": "x",
    "empty-list": [],
    "list-of-null": [None],
    "list-of-list": [[[]]],
    "empty-object": {},
    "object": {"a": 1},
}


def junk(*skip: str) -> dict[str, Any]:
    return {k: v for k, v in JUNK.items() if k not in skip}


STRINGS = ("empty-string", "string")  # valid text values
NUMBERS = ("zero", "minus-one", "float", "big-float")  # valid float32 values
for name, value in junk().items():  # any part of the body of the wrong type
    add(f"v1-instances-{name}", V1, {"instances": value}, status=400)
    add(f"classify-examples-{name}", V1_CLASSIFY, {"examples": value}, status=400)
    add(f"v2-inputs-{name}", V2, {"inputs": value}, status=400)
    add(f"v2-tensor-{name}", V2, {"inputs": [value]}, status=400)
    add(f"v2-name-{name}", V2, v2_text(name=value), status=400)
    add(f"v2-datatype-{name}", V2, v2_text(datatype=value), status=400)
    add(f"v2-shape-{name}", V2, v2_text(shape=value), status=400)
    add(f"v2-shape-dim-{name}", V2, v2_text(shape=[value]), status=400)
    add(f"v2-outputs-{name}", V2, dict(v2_text(), outputs=[{"name": value}]), status=400)
for name, value in junk(*STRINGS).items():  # a text value of the wrong type
    add(f"v1-instance-{name}", V1, {"instances": [value]}, status=400)
    add(f"v1-columns-{name}", V1, {"inputs": {"text": [value]}}, status=400)
    add(f"v1-row-object-{name}", V1, {"instances": [{"text": value}]}, status=400)
    add(f"classify-example-{name}", V1_CLASSIFY, {"examples": [{"text": value}]}, status=400)
    add(f"v2-data-{name}", V2, v2_text(data=value), status=400)  # "x" is [1] value: valid
    add(
        f"churn-plan-{name}",
        CHURN_V1,
        {"instances": [{"minutes": 1.0, "calls": 1, "plan": value}]},
        status=400,
    )
for name, value in junk(*NUMBERS).items():
    add(
        f"churn-minutes-{name}",
        CHURN_V1,
        {"instances": [{"minutes": value, "calls": 1, "plan": "a"}]},
        status=400,
    )
for name, value in junk("empty-list").items():  # [] is a batch of no rows: valid
    add(f"v1-inputs-{name}", V1, {"inputs": value}, status=400)
for name, value in junk("null", "empty-string").items():  # null / "" mean the default
    add(f"v1-signature-{name}", V1, {"signature_name": value, "instances": ["a"]}, status=400)
    add(
        f"v2-signature-{name}",
        V2,
        dict(v2_text(), parameters={"signature_name": value}),
        status=400,
    )
for name, value in junk(
    "null", "empty-object", "empty-list", "object", "zero", "empty-string"
).items():
    add(f"v2-parameters-{name}", V2, dict(v2_text(), parameters=value), status=400)
for name, value in junk("null", "empty-list").items():
    add(f"v2-outputs-whole-{name}", V2, dict(v2_text(), outputs=value), status=400)
for name, value in junk("empty-string", "string").items():
    add(f"v2-id-{name}", V2, dict(v2_text(), id=value), status=400, message="'id' must be a string")
# An object context is valid: its features join every example (unknown ones are ignored, as
# TF Serving's tf.Example parsing does).
junk_context = junk("null", "empty-object", "empty-list", "zero", "empty-string", "object")
for name, value in junk_context.items():
    add(
        f"classify-context-{name}",
        V1_CLASSIFY,
        {"examples": [{"text": "a"}], "context": value},
        status=400,
    )
for name, value in junk("zero", "minus-one").items():  # whole numbers in int64
    add(
        f"churn-calls-{name}",
        CHURN_V1,
        {"instances": [{"minutes": 1.0, "calls": value, "plan": "a"}]},
        status=400,
    )

MORE = {
    "v1-both-formats": (V1, {"instances": ["a"], "inputs": ["a"]}),
    "v1-neither-format": (V1, {}),
    "v1-typo-key": (V1, {"instance": ["a"]}),
    "v1-extra-key": (V1, {"instances": ["a"], "extra": 1}),
    "v1-empty-instances": (V1, {"instances": []}),
    "v1-unknown-signature": (V1, {"signature_name": "nope", "instances": ["a"]}),
    "v1-row-two-values": (V1, {"instances": [["a", "b"]]}),
    "v1-ragged-columns": (V1, {"inputs": {"text": [["a"], ["b", "c"]]}}),
    "v1-scalar-column": (V1, {"inputs": {"text": "a"}}),
    "v1-unknown-input": (V1, {"instances": [{"txt": "a"}]}),
    "v1-b64-not-string": (V1, {"instances": [{"b64": 1}]}),
    "v1-b64-invalid": (V1, {"instances": [{"b64": "%%%"}]}),
    "v1-b64-extra-key": (V1, {"instances": [{"b64": "YQ==", "x": 1}]}),
    "v1-tokenize-b64-invalid": (V1, {"signature_name": "tokenize", "instances": [{"b64": "a"}]}),
    "v1-regress": (
        "/v1/models/reviews:regress",
        {"signature_name": "classify", "examples": [{"text": "a"}]},
    ),
    "classify-bad-signature": (
        V1_CLASSIFY,
        {"signature_name": "tokenize", "examples": [{"text": "a"}]},
    ),
    "classify-context-bad-value": (V1_CLASSIFY, {"examples": [{}], "context": {"text": [None]}}),
    "classify-feature-object": (V1_CLASSIFY, {"examples": [{"text": {"x": 1}}]}),
    "classify-typo-key": (V1_CLASSIFY, {"example": [{"text": "a"}]}),
    "v2-empty-inputs": (V2, {"inputs": []}),
    "v2-missing-fields": (V2, {"inputs": [{"name": "text"}]}),
    "v2-twice": (V2, {"inputs": [v2_text()["inputs"][0], v2_text()["inputs"][0]]}),
    "v2-wrong-datatype": (V2, v2_text(datatype="FP32", data=[1.0])),
    "v2-count-mismatch": (V2, v2_text(shape=[2])),
    "v2-negative-dim": (V2, v2_text(shape=[-1])),
    "v2-rank-2": (V2, v2_text(shape=[1, 1], data=[["a"]])),
    "v2-ragged-data": (V2, v2_text(shape=[2], data=[["a"], "b"])),
    "v2-unknown-input": (V2, v2_text(name="txt")),
    "v2-unknown-output": (V2, dict(v2_text(), outputs=[{"name": "probs"}])),
    "v2-typo-key": (V2, {"input": v2_text()["inputs"]}),
    "v2-unknown-signature": (V2, dict(v2_text(), parameters={"signature_name": "nope"})),
    "churn-missing-input": (CHURN_V1, {"instances": [{"minutes": 1.0, "calls": 2}]}),
    "churn-bare-row": (CHURN_V1, {"instances": ["gold"]}),
    "churn-rows-disagree": (
        CHURN_V1,
        {"inputs": {"minutes": [1.0, 2.0], "calls": [1], "plan": ["a", "b"]}},
    ),
    "churn-nan-calls": (CHURN_V1, {"instances": [{"minutes": 1.0, "calls": "NaN", "plan": "a"}]}),
    "churn-bool-minutes": (CHURN_V1, {"instances": [{"minutes": True, "calls": 1, "plan": "a"}]}),
    "churn-v2-bool-data": (
        CHURN_V2,
        {
            "inputs": [
                {"name": "minutes", "shape": [1], "datatype": "FP32", "data": [True]},
                {"name": "calls", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["a"]},
            ]
        },
    ),
    "churn-v2-rows-disagree": (
        CHURN_V2,
        {
            "inputs": [
                {"name": "minutes", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                {"name": "calls", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["a"]},
            ]
        },
    ),
}
for name, (route, body) in MORE.items():
    add(name, route, body)
for value, name in ((float("nan"), "nan"), (float("inf"), "infinity")):  # json.dumps writes tokens
    add(
        f"churn-calls-{name}-token",
        CHURN_V1,
        raw='{"instances": [{"minutes": 1.0, "calls": ' + json.dumps(value) + ', "plan": "a"}]}',
        status=400,
    )

# -- the V2 binary tensor extension: JSON header, then raw tensor bytes -----------------------


def binary(
    id: str,
    tensors: list[dict[str, Any]],
    data: bytes,
    *,
    length: str | None = None,
    message: str | None = None,
    route: str = V2,
) -> None:
    head = json.dumps({"inputs": tensors}).encode()
    add(
        f"v2-binary-{id}",
        route,
        raw_bytes=head + data,
        headers={"Inference-Header-Content-Length": length or str(len(head))},
        status=400,
        message=message,
    )


def text_bin(size: Any, shape: Any = None, **extra: Any) -> dict[str, Any]:
    params = {"binary_data_size": size}
    return {
        "name": "text",
        "shape": shape or [1],
        "datatype": "BYTES",
        "parameters": params,
        **extra,
    }


ABC = struct.pack("<I", 3) + b"abc"
for name, length in (
    ("length-zero", "0"),
    ("length-beyond-body", "100000"),
    ("length-negative", "-5"),
    ("length-text", "ten"),
    ("length-huge", "9" * 40),
    ("length-exponent", "1e3"),
):
    binary(name, [text_bin(7)], ABC, length=length, message="Inference-Header-Content-Length")
binary("size-beyond-data", [text_bin(99)], ABC, message="goes beyond")
binary("size-short-of-data", [text_bin(3)], ABC, message="add up")
binary("data-left-over", [text_bin(7)], ABC + b"\0\0", message="add up")
binary("no-size-but-data", [v2_text()["inputs"][0]], ABC, message="add up")
binary("size-negative", [text_bin(-1)], b"", message="binary_data_size")
binary("size-float", [text_bin(7.0)], ABC, message="binary_data_size")
binary("size-string", [text_bin("7")], ABC, message="binary_data_size")
binary("size-bool", [text_bin(True)], b"\0", message="binary_data_size")
binary("size-and-data", [text_bin(7, data=["a"])], ABC, message="both")
binary("parameters-list", [{**text_bin(7), "parameters": [7]}], ABC)
binary("bytes-length-missing", [text_bin(7, [2])], ABC, message="4-byte length")
binary("bytes-length-beyond", [text_bin(7)], struct.pack("<I", 2**31) + b"abc", message="claims")
binary("bytes-count-short", [text_bin(3)], b"abc", message="4-byte length")
binary("bytes-shape-billions", [text_bin(7, [1, 2**31 - 1, 2**31 - 1])], ABC, message="at least")
binary("bytes-left-over", [text_bin(9, [1])], ABC + b"zz", message="left over")
binary("shape-mismatch", [text_bin(7, [1, 1])], ABC, message="shape")
binary("wrong-datatype", [{**text_bin(4), "datatype": "FP32"}], b"\0" * 4, message="datatype")
binary("unknown-input", [{**text_bin(7), "name": "txt"}], ABC, message="unknown input")
binary("json-header-cut", [text_bin(7)], ABC, length="5")
CHURN_BIN = [
    {"name": "minutes", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
    {"name": "calls", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
    {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
]
binary("fp32-too-short", CHURN_BIN, b"\0" * 20, message="needs 8 bytes", route=CHURN_V2)
binary(
    "rows-disagree",
    [{**CHURN_BIN[0], "shape": [1]}, CHURN_BIN[1], CHURN_BIN[2]],
    b"\0" * 20,
    message="same number of rows",
    route=CHURN_V2,
)
binary(
    "rows-over-limit",
    [text_bin(4 * (MAX_ROWS + 1), [MAX_ROWS + 1])],
    struct.pack("<I", 0) * (MAX_ROWS + 1),
    message="max_rows_per_request",
)
entries[-1]["status"] = 413
for name, outputs in {
    "classify-1d-output": [{"name": "score", "parameters": {"classification": 2}}],
    "classify-negative": [{"name": "score", "parameters": {"classification": -1}}],
    "binary-data-not-bool": [{"name": "score", "parameters": {"binary_data": "yes"}}],
}.items():
    add(
        f"v2-output-{name}",
        CHURN_V2,
        {
            "inputs": [
                {**t, "parameters": {}, "data": [1, 2] if t["datatype"] != "BYTES" else ["a", "b"]}
                for t in CHURN_BIN
            ],
            "outputs": outputs,
        },
        status=400,
    )
for name, encoding, data in (
    ("gzip-not-gzip", "gzip", json.dumps(v2_text()).encode()),
    ("deflate-not-deflate", "deflate", b"\x00\x01garbage"),
    ("encoding-unknown", "br", json.dumps(v2_text()).encode()),
    ("gzip-cut", "gzip", gzip.compress(json.dumps(v2_text()).encode(), mtime=0)[:-12]),
):
    add(f"v2-{name}", V2, raw_bytes=data, headers={"Content-Encoding": encoding}, status=400)
add(
    "v2-gzip-bomb",
    V2,
    raw_bytes=gzip.compress(b" " * (9 * 1024 * 1024) + json.dumps(v2_text()).encode(), mtime=0),
    headers={"Content-Encoding": "gzip"},
    status=413,
)
add(
    "v2-binary-data-output-not-bool",
    V2,
    {**v2_text(), "parameters": {"binary_data_output": 1}},
    status=400,
    message="binary_data_output",
)
add("classify-bool-feature", V1_CLASSIFY, {"examples": [{"text": True}]}, status=400)
add("classify-mixed-feature", V1_CLASSIFY, {"examples": [{"text": ["a", 1]}]}, status=400)
add("classify-huge-int", V1_CLASSIFY, {"examples": [{"text": 2**70}]}, status=400)
add("regress-examples-not-list", "/v1/models/reviews:regress", {"examples": {}}, status=400)
add("regress-churn-no-signature", "/v1/models/churn:regress", {"examples": [{}]}, status=400)

# -- too many rows (counted before any row is converted) -------------------------------------

ROWS = MAX_ROWS + 1
add("rows-instances", V1, {"instances": ["a"] * ROWS}, status=413, message="max_rows_per_request")
add("rows-columns", V1, {"inputs": {"text": ["a"] * ROWS}}, status=413)
add("rows-columns-bare", V1, {"inputs": ["a"] * ROWS}, status=413)
add("rows-classify", V1_CLASSIFY, {"examples": [{"text": "a"}] * ROWS}, status=413)
add("rows-v2", V2, v2_text(shape=[ROWS], data=["a"] * ROWS), status=413)
add("rows-v2-shape-only", V2, v2_text(shape=[10**9], data=["a"]), status=413)
add("rows-churn-bad-values", CHURN_V1, {"instances": [{"minutes": "x"}] * ROWS}, status=413)

# -- methods and routes ------------------------------------------------------------------------

for method in ("PUT", "DELETE", "PATCH"):
    for route in (V1, V2, "/metrics", "/v2/health/live", "/v1/models/reviews"):
        add(
            f"method-{method.lower()}-{route.strip('/').replace('/', '-').replace(':', '-')}",
            route,
            {"instances": ["a"]},
            method=method,
            status=405,
        )
add("get-predict", V1, method="GET", status=405)
add("get-infer", V2, method="GET", status=405)
add("post-live", "/v2/health/live", {}, status=405)
add("post-metrics", "/metrics", {}, status=405)
add("post-status", "/v1/models/reviews", {"instances": ["a"]}, status=405)
for name, path in {
    "v3": "/v3/models/reviews",
    "v1-no-model": "/v1/models/",
    "v1-double-verb": "/v1/models/reviews:predict:predict",
    "v1-unknown-verb": "/v1/models/reviews:explain",
    "v2-extra-segment": "/v2/models/reviews/extra/infer",
    "v2-versions-no-number": "/v2/models/reviews/versions//infer",
    "v2-no-model": "/v2/models//infer",
    "root": "/",
    "long-path": "/" + "a" * 10_000,
}.items():
    add(
        f"route-{name}",
        path,
        {"instances": ["a"]},
        status=404 if name != "v1-double-verb" else None,
    )

seen: set[str] = set()
for e in entries:
    assert e["id"] not in seen, e["id"]
    seen.add(e["id"])

if __name__ == "__main__":
    OUT.write_text(json.dumps(entries, indent=0, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"{len(entries)} requests written to {OUT}")
