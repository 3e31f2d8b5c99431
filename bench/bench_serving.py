"""Serving throughput and latency: dynamic batching vs one call per request vs a naive server,
and gRPC vs REST.

Trains a text model of the default architecture (word CNN, 200 tokens, 64-dim embedding, 128
filters) on fine-foods reviews, publishes it, and measures these one after the other in this
one run, each server in its own process, on loopback:

- ``batching``:  ``evergreen serve --max-batch-size 32 --batch-timeout-ms 2`` (dynamic batching);
- ``grpc``:      the same ``batching`` server, called on its gRPC port: TF Serving's
  ``PredictionService/Predict`` with a one-string ``TensorProto``;
- ``no-batch``:  ``evergreen serve --max-batch-size 1`` (the same server, one call per request);
- ``naive``:     Starlette + ``model(x)`` per request in a thread pool (what one writes first).

Each client request is one review (``{"instances": [text]}``, or the same row as a
``PredictRequest``). For each concurrency, clients
send requests back to back for ``--seconds`` after a warm-up; throughput is answers per second,
latencies are per request. A gRPC client holds one channel (one HTTP/2 connection) per
concurrent client and sends pre-serialized requests, as the REST client sends pre-built bytes.
The client runs in this process (not in the servers'), on uvloop when
installed; it still shares the machine's cores with the server: on a small machine that caps
every number, so read the ratios. All servers use the same HTTP stack (uvicorn with httptools
and uvloop when installed).

    PYTHONPATH=src python bench/bench_serving.py [--seconds 8] [--concurrency 1,8,32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "reviews"


def naive_server(model_dir: str, port: int) -> None:
    """The baseline: a web framework and ``model(x)`` per request, nothing else."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from evergreen.tf import tensorflow

    tf = tensorflow()
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]

    def predict(texts: list[str]) -> list[dict[str, object]]:
        out = serve(text=tf.constant(texts))
        return [
            {"classes": [c.decode() for c in classes], "scores": scores.tolist()}
            for classes, scores in zip(out["classes"].numpy(), out["scores"].numpy(), strict=True)
        ]

    async def endpoint(request):  # type: ignore[no-untyped-def]
        body = await request.json()
        return JSONResponse({"predictions": await run_in_threadpool(predict, body["instances"])})

    async def ready(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"ready": True})

    app = Starlette(
        routes=[
            Route(f"/v1/models/{MODEL}:predict", endpoint, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )
    from evergreen.serving.server import http_stack

    # The same HTTP stack as evergreen serve (httptools, uvloop when installed), so the
    # comparison is between the servers, not between their parsers.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        **http_stack(),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT / "src"))
    env.pop("EVERGREEN_API_KEYS", None)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{command} did not become ready")


async def load(
    port: int, texts: list[str], concurrency: int, seconds: float, warmup: float, pid: int
) -> dict[str, float]:
    """``concurrency`` keep-alive connections sending one request after another.

    A minimal HTTP/1.1 client over asyncio streams, not httpx: on a 2-core machine the client
    shares the CPU with the server, and httpx's per-request cost would cap every server alike.
    """
    import json

    bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
    head = f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    requests = [head.encode() + f"Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]
    latencies: list[float] = []
    errors = 0

    async def worker(k: int, until: float, record: bool) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < until:
                started = time.perf_counter()
                writer.write(requests[i % len(requests)])
                i += concurrency
                header = await reader.readuntil(b"\r\n\r\n")
                status = int(header.split(b" ", 2)[1])
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if record:
                    if status == 200:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1
        finally:
            writer.close()

    return await _measure(worker, concurrency, seconds, warmup, latencies, lambda: errors, pid)


async def load_grpc(
    port: int, texts: list[str], concurrency: int, seconds: float, warmup: float, pid: int
) -> dict[str, float]:
    """Like :func:`load`, over gRPC: ``concurrency`` channels, one Predict after another.

    Requests are serialized once up front and answers are not parsed (status only), so the
    client costs about what the raw HTTP client does.
    """
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    def request(text: str) -> bytes:
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
            ),
            string_val=[text.encode()],
        )
        message = predict_pb2.PredictRequest()
        message.model_spec.name = MODEL
        message.inputs["text"].CopyFrom(tensor)
        return message.SerializeToString()

    requests = [request(t) for t in texts]
    latencies: list[float] = []
    errors = 0

    async def worker(k: int, until: float, record: bool) -> None:
        nonlocal errors
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            i = k
            while time.perf_counter() < until:
                started = time.perf_counter()
                body = requests[i % len(requests)]
                i += concurrency
                try:
                    await predict(body, timeout=60)
                    ok = True
                except grpc.aio.AioRpcError:
                    ok = False
                if record:
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

    return await _measure(worker, concurrency, seconds, warmup, latencies, lambda: errors, pid)


async def _measure(
    worker: Any,
    concurrency: int,
    seconds: float,
    warmup: float,
    latencies: list[float],
    errors: Any,
    pid: int,
) -> dict[str, float]:
    """Warm up, then run ``concurrency`` workers for ``seconds``; throughput, percentiles, and
    the CPU time per answered request of the server process and of this (client) process."""
    until = time.perf_counter() + warmup
    await asyncio.gather(*(worker(k, until, False) for k in range(concurrency)))
    started = time.perf_counter()
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    until = started + seconds
    await asyncio.gather(*(worker(k, until, True) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    server_cpu, client_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    latencies.sort()
    answered = max(1, len(latencies))
    return {
        "server_cpu": server_cpu / answered * 1000,
        "client_cpu": client_cpu / answered * 1000,
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        "n": len(latencies),
        "errors": errors(),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(coroutine: Any) -> dict[str, float]:
    """The load generator's event loop: uvloop when installed (a cheaper client leaves more of
    a small machine to the server under test; every server gets the same client)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    return (
        f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {gpus} GPU(s), Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds per cell")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=2.0,
        help="the batching server's serving.batch_timeout_ms (default 2; the config's is 0)",
    )
    parser.add_argument("--batch-threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="rounds; medians are reported")
    parser.add_argument("--only", default="batching,grpc,no-batch,naive", help="servers to measure")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument(
        "--naive-server", nargs=2, metavar=("MODEL_DIR", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.naive_server:
        naive_server(args.naive_server[0], int(args.naive_server[1]))
        return

    from tests.serving_support import publish, read_reviews, train_exports

    from evergreen.registry import Registry
    from evergreen.tf import tensorflow

    tensorflow()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print("machine:", machine())
    from evergreen.serving.server import http_stack

    print("http stack: uvicorn, {http} parser, {loop} event loop".format(**http_stack()))
    loads = [os.getloadavg()[0]]
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        started = time.perf_counter()
        exports = train_exports(
            work, 1, rows=1000, sequence_length=200, embedding_dim=64, conv_filters=128
        )
        registry = Registry(work / "registry")
        publish(registry, exports, 0)
        print(
            f"model: word CNN, 200 tokens, embedding 64, 128 filters (trained in {time.perf_counter() - started:.0f}s)"
        )
        texts, _ = read_reviews(1000)
        levels = [int(c) for c in args.concurrency.split(",")]
        serve = [
            sys.executable,
            "-m",
            "evergreen",
            "serve",
            "--registry",
            str(registry.root),
            "--audit-log",
            os.devnull,
        ]
        servers = {
            "batching": serve
            + [
                "--max-batch-size",
                str(args.max_batch_size),
                "--batch-timeout-ms",
                str(args.batch_timeout_ms),
                "--batch-threads",
                str(args.batch_threads),
            ],
            "grpc": [],  # the batching server's gRPC port
            "no-batch": serve + ["--max-batch-size", "1", "--grpc-port", "-1"],
            "naive": [sys.executable, __file__, "--naive-server", str(exports.paths[0])],
        }
        servers = {k: v for k, v in servers.items() if k in args.only.split(",")}
        # All servers run at once (idle ones cost memory, not CPU) and are measured in turn,
        # round after round: background load on a shared machine then hits each alike.
        processes = {}
        runs: dict[str, dict[int, list[dict[str, float]]]] = {
            n: {c: [] for c in levels} for n in servers
        }
        try:
            grpc_port = free_port()
            if "batching" in servers:
                servers["batching"] = servers["batching"] + ["--grpc-port", str(grpc_port)]
            for name, command in servers.items():
                if name == "grpc":
                    continue
                port = free_port()
                command = command + (["--port", str(port)] if name != "naive" else [str(port)])
                processes[name] = (start(command, port), port)
            if "grpc" in servers:
                if "batching" not in processes:
                    raise SystemExit("--only grpc needs batching too: gRPC is its port")
                processes = {
                    name: (processes["batching"][0], grpc_port)
                    if name == "grpc"
                    else processes[name]
                    for name in servers
                }
            for round_ in range(args.repeat):
                for c in levels:
                    for name, (process, port) in processes.items():
                        measure = load_grpc if name == "grpc" else load
                        r = run_load(
                            measure(port, texts, c, args.seconds, args.warmup, process.pid)
                        )
                        runs[name][c].append(r)
                        loads.append(os.getloadavg()[0])
                        print(
                            f"  round {round_ + 1} {name:9s} c={c:<3d} {r['rps']:8.1f} req/s  p50 {r['p50']:7.1f} ms  "
                            f"p99 {r['p99']:7.1f} ms  CPU/request: server {r['server_cpu']:.2f} ms, "
                            f"client {r['client_cpu']:.2f} ms  ({int(r['n'])} requests, {int(r['errors'])} errors, "
                            f"load average {loads[-1]:.1f})",
                            flush=True,
                        )
        finally:
            unique = {id(p): p for p, _ in processes.values()}.values()  # grpc shares one
            for process in unique:
                process.terminate()
            for process in unique:
                process.wait(timeout=60)
        results = {
            name: {
                c: {
                    k: statistics.median(r[k] for r in rs)
                    for k in ("rps", "p50", "p99", "server_cpu", "client_cpu")
                }
                | {"errors": sum(r["errors"] for r in rs)}
                for c, rs in by_c.items()
            }
            for name, by_c in runs.items()
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"1-minute load average during the run: {min(loads):.1f} to {max(loads):.1f}")
    print(
        f"{'concurrency':>11} | {'server':9} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | "
        f"{'errors':>6} | server CPU ms/req | client CPU ms/req"
    )
    for c in levels:
        for name in servers:
            r = results[name][c]
            print(
                f"{c:>11} | {name:9} | {r['rps']:8.1f} | {r['p50']:7.1f} | {r['p99']:7.1f} | "
                f"{int(r['errors']):>6} | {r['server_cpu']:17.2f} | {r['client_cpu']:17.2f}"
            )
    print()
    if {"batching", "grpc"} <= set(servers):
        for c in levels:
            b, g = results["batching"][c], results["grpc"][c]
            print(
                f"c={c:<3d} gRPC vs REST (same server): throughput x{g['rps'] / b['rps']:.2f}, "
                f"p99 x{g['p99'] / b['p99']:.2f}, server CPU per request "
                f"x{g['server_cpu'] / b['server_cpu']:.2f}, client CPU per request "
                f"x{g['client_cpu'] / b['client_cpu']:.2f}"
            )
    if not {"batching", "no-batch", "naive"} <= set(servers):
        return
    for c in levels:
        b, o, n = results["batching"][c], results["no-batch"][c], results["naive"][c]
        print(
            f"c={c:<3d} batching vs no-batch: throughput x{b['rps'] / o['rps']:.2f}, p99 x{b['p99'] / o['p99']:.2f} | "
            f"batching vs naive: throughput x{b['rps'] / n['rps']:.2f}, p99 x{b['p99'] / n['p99']:.2f}"
        )


if __name__ == "__main__":
    main()
