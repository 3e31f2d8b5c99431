"""Measure one big request against `evergreen serve` while another client sends one-row ones.

Not a test: the figures of docs/serving.md ("One big request") come from it. It trains the
tiny text model of tests/serving_support.py, starts `evergreen serve` in its own process (the
`evergreen` first on PYTHONPATH, so the same script measures another checkout), sends ROWS
two-letter strings in one request from a thread, and one-row requests in a loop meanwhile.

    PYTHONPATH=src python tests/bad_inputs/big_request.py 1000000
    PYTHONPATH=src python tests/bad_inputs/big_request.py 20000 --max-rows-per-request 20000

Prints the big request's status and time, the small requests' count, statuses, median and
worst latency, and the server's RSS before and after and its peak (VmHWM, Linux).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evergreen.registry import Registry  # noqa: E402
from tests.serving_support import MODEL, publish, train_exports  # noqa: E402

MB = 1024 * 1024


def peak_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    folder = Path(tempfile.mkdtemp())
    registry = Registry(folder / "registry")
    publish(registry, train_exports(folder, 1), 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "evergreen", "serve", "--registry", str(registry.root)]
    cmd += ["--port", str(port), "--grpc-port", "0", "--audit-log", os.devnull, *extra]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not become ready")


def main() -> None:
    rows, extra = int(sys.argv[1]), sys.argv[2:]
    server, url = start_server(extra)
    predict = f"/v1/models/{MODEL}:predict"
    try:
        small = httpx.Client(base_url=url, timeout=60)
        for _ in range(20):
            small.post(predict, json={"instances": ["warm up"]})
        process = psutil.Process(server.pid)
        before, peak_before = process.memory_info().rss // MB, peak_mb(server.pid)
        words = [f"{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(rows)]
        body = json.dumps({"instances": words}).encode()
        big: dict[str, object] = {}

        def send_big() -> None:
            started = time.perf_counter()
            r = httpx.post(
                url + predict,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=300,
            )
            big.update(status=r.status_code, seconds=round(time.perf_counter() - started, 2))

        thread = threading.Thread(target=send_big)
        thread.start()
        latencies, statuses = [], {}
        while thread.is_alive() and len(latencies) < 5000:
            started = time.perf_counter()
            r = small.post(predict, json={"instances": ["tea"]})
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        thread.join()
        time.sleep(1)
        after, peak_after = process.memory_info().rss // MB, peak_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    print(f"rows={rows} {' '.join(extra)}: big request {big}")
    if latencies:
        print(
            f"  small requests during it: {len(latencies)} {statuses}, "
            f"p50 {statistics.median(latencies):.1f} ms, max {max(latencies):.0f} ms"
        )
    print(
        f"  server RSS before {before} MB, after {after} MB; "
        f"peak (VmHWM) {peak_before} MB -> {peak_after} MB"
    )


if __name__ == "__main__":
    main()
