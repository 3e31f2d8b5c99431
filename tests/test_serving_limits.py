"""A bounded server: every malformed request a 4xx, rows and headers limited, memory bounded.

The corpus tests/bad_inputs/requests.json (made by tests/bad_inputs/make_requests.py) is
replayed against a live server on loopback; every request must be answered 4xx. Connection
limits are checked over raw sockets, since HTTP clients refuse to send what they test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from evergreen.config import ServingConfig, serving_from_dict
from evergreen.errors import BadRequest, ConfigError
from evergreen.registry import Registry
from evergreen.serving import DynamicBatcher, ServerThread, build
from evergreen.serving.codec import MAX_JSON_DEPTH, parse_body
from tests.bad_inputs.make_requests import expand
from tests.serving_support import MODEL, Exports, publish, publish_generic, shared_exports

CORPUS = Path(__file__).with_name("bad_inputs") / "requests.json"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def registry(exports: Exports, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """``reviews`` (the text model) and the hand-made ``churn`` and ``photos``."""
    folder = tmp_path_factory.mktemp("limits")
    registry = Registry(folder / "registry")
    publish(registry, exports, 0)
    publish_generic(registry, folder)
    return registry


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[httpx.Client]:
    """Default limits (the corpus is written for them)."""
    settings = ServingConfig(port=0, audit_log=os.devnull)
    with (
        ServerThread(build(registry.root, settings), settings) as running,
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Short read and keep-alive timeouts, few connections; no models (none are needed)."""
    folder = tmp_path_factory.mktemp("tight")
    settings = ServingConfig(
        port=0,
        audit_log=str(folder / "audit.jsonl"),
        read_timeout_seconds=0.5,
        keep_alive_seconds=0.5,
        max_connections=4,
        max_header_bytes=4096,
    )
    (folder / "registry").mkdir()
    with ServerThread(build(folder / "registry", settings), settings) as running:
        running.audit = folder / "audit.jsonl"  # type: ignore[attr-defined]
        yield running


# -- the corpus ------------------------------------------------------------------------------


def replay(client: httpx.Client, entry: dict) -> tuple[int | None, str]:
    """Send one corpus request; (status, error text), status None when it hung."""
    if "body_b64" in entry:
        content = base64.b64decode(entry["body_b64"])
    elif "body" in entry:
        content = expand(entry["body"]).encode("utf-8")
    else:
        content = None
    headers = {"Content-Type": "application/json"} if content is not None else {}
    headers.update(entry.get("headers", {}))
    try:
        r = client.request(entry["method"], expand(entry["path"]), content=content, headers=headers)
    except httpx.TimeoutException:
        return None, "no answer within the client's timeout"
    try:
        return r.status_code, str(r.json().get("error", ""))
    except (ValueError, AttributeError):
        return r.status_code, r.text


def test_every_request_of_the_corpus_is_answered_4xx(server: httpx.Client):
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    assert len(corpus) > 800
    tally: Counter[str] = Counter()
    wrong = []
    for entry in corpus:
        status, error = replay(server, entry)
        kind = "hang" if status is None else f"{status // 100}xx"
        tally[kind] += 1
        if (
            status is None
            or not 400 <= status < 500
            or (entry["status"] is not None and status != entry["status"])
            or (entry["message"] is not None and entry["message"] not in error)
        ):
            wrong.append((entry["id"], status, error[:200]))
    summary = f"{len(corpus)} malformed requests: " + ", ".join(
        f"{tally[k]} {k}" for k in ("4xx", "5xx", "hang", "2xx") if tally[k] or k != "2xx"
    )
    print(summary)
    assert not wrong, f"{summary}; unexpected answers: {wrong[:20]}"
    # The server is still well after all of it.
    ok = server.post(f"/v1/models/{MODEL}:predict", json={"instances": ["tea"]})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            b"[" * 40 + b"]" * 40,
            f"nested 40 deep; this server takes lists and objects nested at most {MAX_JSON_DEPTH}",
        ),
        (b'{"a": ' + b"[" * 990 + b"]" * 990 + b"}", "nested 991 deep"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate in the string at body.a"),
        (b'{"a": ["x", "\xed\xa0\x80"]}', "lone UTF-16 surrogate in the string at body.a[1]"),
        (b'{"\\udfff": 1}', "surrogate in the string at a key of body"),
        (b'{"a": ' + b"7" * 4301 + b"}", "integer of more than 4300 digits"),
        (b"[1]", "must be a JSON object, got a list"),
    ],
    ids=[
        "deep-list",
        "deep-990",
        "surrogate-escape",
        "surrogate-bytes",
        "surrogate-key",
        "huge-int",
        "list",
    ],
)
def test_parse_body_refuses_what_the_decoders_could_not_take(raw: bytes, message: str):
    with pytest.raises(BadRequest) as e:
        parse_body(raw)
    assert message in e.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": "' + b"[" * 100 + b'"}', {"a": "[" * 100}),  # brackets in strings do not nest
        (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a surrogate pair is one character
        (b'{"a": "\\\\ud800"}', {"a": "\\ud800"}),  # an escaped backslash, not a surrogate
        (b'{"a": ' + b"[" * 31 + b"]" * 31 + b"}", {"a": json.loads("[" * 31 + "]" * 31)}),
    ],
    ids=["brackets-in-strings", "surrogate-pair", "escaped-backslash", "depth-32"],
)
def test_parse_body_takes_what_is_valid(raw: bytes, expected: dict):
    assert parse_body(raw) == expected


# -- rows ------------------------------------------------------------------------------------


def batch_count(client: httpx.Client) -> float:
    """Model calls made for reviews' serving_default so far (the batch-size histogram)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("evergreen_batch_size_count") and 'signature="serving_default"' in line:
            if f'model="{MODEL}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rows_up_to_the_limit_are_served_in_parts_of_max_batch_size(server: httpx.Client):
    texts = [f"review {i}" for i in range(4096)]
    before = batch_count(server)
    r = server.post(f"/v1/models/{MODEL}:predict", json={"instances": texts})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 4096
    # The same rows one by one would give the same answers: the parts were joined in order.
    single = server.post(f"/v1/models/{MODEL}:predict", json={"instances": texts[4000:4001]})
    np.testing.assert_allclose(
        predictions[4000]["scores"], single.json()["predictions"][0]["scores"], rtol=1e-5
    )
    assert batch_count(server) - before >= math.ceil(4096 / 32)  # parts of max_batch_size=32

    too_many = server.post(f"/v1/models/{MODEL}:predict", json={"instances": texts + ["x"]})
    assert too_many.status_code == 413
    assert too_many.json()["error"] == (
        "'instances' has 4097 rows; this server takes at most 4096 per request "
        "(serving.max_rows_per_request). Split the rows over several requests"
    )


def test_a_big_request_does_not_hold_the_model_others_run_between_its_parts():
    calls: list[int] = []
    gate = threading.Event()

    def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        gate.wait(timeout=30)  # the first part runs until the small request is queued
        return {"y": inputs["x"] * 2}

    async def main() -> None:
        batcher = DynamicBatcher(model, max_batch_size=10, max_delay=0.0)
        big = asyncio.ensure_future(
            batcher.submit({"x": np.arange(100, dtype=np.float32)}, time.monotonic() + 30)
        )
        for _ in range(1000):  # until the first part is in the model
            if calls:
                break
            await asyncio.sleep(0.01)
        small = asyncio.ensure_future(
            batcher.submit({"x": np.array([7.0], dtype=np.float32)}, time.monotonic() + 30)
        )
        for _ in range(1000):
            if batcher.queued:
                break
            await asyncio.sleep(0.01)
        gate.set()
        big_out, small_out = await asyncio.gather(big, small)
        await batcher.close()
        np.testing.assert_array_equal(big_out["y"], np.arange(100) * 2)
        assert small_out["y"].tolist() == [14.0]

    asyncio.run(main())
    # Ten parts of 10 rows; the 1-row request ran right after the first, not after all ten.
    assert calls == [10, 1] + [10] * 9


def test_a_million_row_request_is_refused_with_memory_bounded(registry: Registry, tmp_path: Path):
    """The issue's attack, against `evergreen serve` in its own process: 4 MB of 1,000,000
    short strings, under the body limit. RSS is read from the server process itself."""
    psutil = pytest.importorskip("psutil")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("EVERGREEN_API_KEYS", None)
    cmd = [sys.executable, "-m", "evergreen", "serve", "--registry", str(registry.root)]
    cmd += ["--port", str(port), "--grpc-port", "0", "--audit-log", os.devnull]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    words = [f"{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(1_000_000)]
    v1_body = json.dumps({"instances": words}).encode()
    v2_body = json.dumps(
        {"inputs": [{"name": "text", "shape": [1_000_000], "datatype": "BYTES", "data": words}]}
    ).encode()
    assert 4_000_000 < len(v1_body) < 8 * 1024 * 1024  # under serving.max_body_bytes
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(600):
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.communicate()[1]
                time.sleep(0.2)
            client.post(f"/v1/models/{MODEL}:predict", json={"instances": ["warm up"]})
            server = psutil.Process(process.pid)
            before = server.memory_info().rss
            statuses = []
            for path, body in [
                (f"/v1/models/{MODEL}:predict", v1_body),
                (f"/v2/models/{MODEL}/infer", v2_body),
            ] * 2:
                r = client.post(path, content=body, headers={"Content-Type": "application/json"})
                statuses.append(r.status_code)
                assert "1000000 rows" in r.json()["error"]
            after = server.memory_info().rss
            peak = _peak_rss(process.pid)
            ok = client.post(f"/v1/models/{MODEL}:predict", json={"instances": ["tea"]})
    finally:
        process.terminate()
        process.communicate(timeout=60)
    mb = 1024 * 1024
    print(
        f"server RSS before {before / mb:.0f} MB, after four 1,000,000-row requests "
        f"{after / mb:.0f} MB, peak (VmHWM) {peak / mb:.0f} MB"
    )
    assert statuses == [413] * 4
    assert ok.status_code == 200
    assert after - before < 300 * mb
    if peak:
        assert peak - before < 400 * mb


def _peak_rss(pid: int) -> int:
    """The process' peak resident set (VmHWM) on Linux; 0 elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- metrics ---------------------------------------------------------------------------------


def test_unknown_model_names_do_not_become_metric_labels(server: httpx.Client):
    first = server.get("/metrics").text
    for i in range(300):
        r = server.post(f"/v1/models/made-up-{i}:predict", json={"instances": ["a"]})
        assert r.status_code == 404
    r = server.get("/v2/models/made-up-x/ready")
    assert r.status_code == 404
    text = server.get("/metrics").text
    assert "made-up" not in text
    unknown = [
        line
        for line in text.splitlines()
        if line.startswith("evergreen_requests_total")
        and 'model="_unknown"' in line
        and 'api="v1"' in line
        and 'status="404"' in line
    ]
    assert len(unknown) == 1 and float(unknown[0].rsplit(" ", 1)[1]) >= 300
    assert len(text) - len(first) < 4000  # a few new samples, not 300 label sets


# -- connections -----------------------------------------------------------------------------


def http(port: int, data: bytes, *, read: bool = True, timeout: float = 30) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed first: its answer is still to be read
        return _read_all(s) if read else b""


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_headers_over_the_limit_get_431_and_the_connection_closes(tight: ServerThread):
    small = (
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"p" * 3000
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert http(tight.port, small).startswith(b"HTTP/1.1 200")
    big = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 5000 + b"\r\n\r\n"
    answer = http(tight.port, big)
    assert answer.startswith(b"HTTP/1.1 431")
    assert b"over 4096 bytes (serving.max_header_bytes)" in answer
    many = b"GET /v2/health/live HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n"
    assert http(tight.port, many).startswith(b"HTTP/1.1 431")


def test_50_mb_of_headers_are_cut_off_after_the_limit(tight: ServerThread):
    with socket.create_connection(("127.0.0.1", tight.port), timeout=30) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        sent = 0
        chunk = b"p" * (1024 * 1024)
        try:
            for _ in range(50):  # 50 MB at most; the server stops reading long before
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(s)
    assert sent < 50 * len(chunk)  # the server closed the connection
    assert answer.startswith(b"HTTP/1.1 431") or answer == b""


def test_a_stalled_request_is_answered_408_and_closed(tight: ServerThread):
    partial_headers = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
    answer = http(tight.port, partial_headers)
    assert answer.startswith(b"HTTP/1.1 408") and b"serving.read_timeout_seconds" in answer
    # Headers whole, body short of its Content-Length: 408 too, and the app saw a disconnect.
    partial_body = (
        b"POST /v1/models/stalled:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        b'{"instances": '
    )
    assert http(tight.port, partial_body).startswith(b"HTTP/1.1 408")
    assert _audited(tight, "/v1/models/stalled:predict")["status"] == 499
    # A connection that sends nothing is closed without an answer.
    assert http(tight.port, b"") == b""


def test_idle_keep_alive_connections_are_closed(tight: ServerThread):
    with socket.create_connection(("127.0.0.1", tight.port), timeout=30) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_all(s)  # returns once the server closes the idle connection
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"live":true}')


def test_connections_beyond_max_connections_get_503(tight: ServerThread):
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    held, answers = [], []
    try:
        for _ in range(6):  # kept-alive connections, each with a request answered
            s = socket.create_connection(("127.0.0.1", tight.port), timeout=30)
            held.append(s)
            s.sendall(request)
            answers.append(s.recv(65536)[:12])
            if answers[-1] != b"HTTP/1.1 200":
                break
    finally:
        for s in held:
            s.close()
    # max_connections = 4, and uvicorn counts the new connection: at most 3 served at once.
    assert answers[-1] == b"HTTP/1.1 503" and 1 <= len(answers) - 1 <= 3, answers
    with httpx.Client(base_url=tight.url) as client:  # once they close, new ones are served
        for _ in range(100):
            if client.get("/v2/health/live").status_code == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the server kept refusing after the connections closed")


def test_a_client_that_hangs_up_is_499_not_a_server_error(
    tight: ServerThread, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="evergreen.serving")
    head = b"POST /v1/models/gone:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    http(tight.port, head + b'{"instances": ["a', read=False)
    assert _audited(tight, "/v1/models/gone:predict")["status"] == 499
    with httpx.Client(base_url=tight.url) as client:
        metrics = client.get("/metrics").text
    assert 'status="499"' in metrics and 'status="500"' not in metrics
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _audited(running: ServerThread, path: str) -> dict:
    """The audit line of the latest request to ``path`` (waiting for it to be written)."""
    audit: Path = running.audit  # type: ignore[attr-defined]
    for _ in range(500):
        lines = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
        found = [x for x in lines if x["path"] == path]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise AssertionError(f"no audit line for {path}")


# -- config ----------------------------------------------------------------------------------


def test_limit_keys_round_trip_and_bad_values_name_the_key():
    raw = {
        "max_rows_per_request": 100,
        "max_header_bytes": 8192,
        "read_timeout_seconds": 2.5,
        "keep_alive_seconds": 1,
        "max_connections": 10,
    }
    settings = serving_from_dict(raw)
    assert (settings.max_rows_per_request, settings.max_header_bytes) == (100, 8192)
    assert (settings.read_timeout_seconds, settings.keep_alive_seconds) == (2.5, 1.0)
    assert settings.max_connections == 10
    for key, value in [
        ("max_rows_per_request", 0),
        ("max_header_bytes", 10),
        ("read_timeout_seconds", "soon"),
        ("max_connections", 1.5),
        ("keep_alive_seconds", 1e12),  # a timer that far overflows asyncio's clock
    ]:
        with pytest.raises(ConfigError, match=f"serving.{key}"):
            serving_from_dict({key: value})
