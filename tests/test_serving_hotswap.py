"""Hot swap under load: the champion moves while 32 clients keep asking; no request fails.

Each version is a different export (classes ``great-k``/``other-k``), so a response proves
which model really ran, not only which version the server claims.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from evergreen.config import ServingConfig
from evergreen.registry import Registry
from evergreen.serving import ServerThread, build
from evergreen.tf import tensorflow
from tests.serving_support import MODEL, Exports, publish, shared_exports

CONCURRENCY = 32
SWAPS = 5


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    version: int | None
    classes: tuple[str, ...]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory, variants=SWAPS + 1)


@pytest.mark.slow
def test_champion_swapped_five_times_under_load_without_a_failed_request(
    exports: Exports, tmp_path: Path
):
    registry = Registry(tmp_path / "registry")
    export_of = {publish(registry, exports, 0): 0}
    settings = ServingConfig(
        port=0, poll_seconds=0.1, max_batch_size=32, batch_timeout_ms=2, audit_log=os.devnull
    )
    answers: list[Answer] = []
    # swaps[i] = (version, alias set at, first seen serving at); version 1 serves from the start.
    swaps: list[tuple[int, float, float]] = [(1, float("-inf"), float("-inf"))]

    with ServerThread(build(registry.root, settings), settings) as running:
        url = f"{running.url}/v1/models/{MODEL}:predict"

        async def client(stop: asyncio.Event, http: httpx.AsyncClient, k: int) -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = await http.post(url, json={"instances": [f"client {k} says great tea"]})
                    version = int(r.headers["X-Model-Version"]) if r.status_code == 200 else None
                    classes = (
                        tuple(r.json()["predictions"][0]["classes"]) if r.status_code == 200 else ()
                    )
                    status = r.status_code
                except httpx.HTTPError as e:  # a dropped connection is a failed request too
                    version, classes, status = None, (), -1
                    print(f"client {k}: {e!r}")
                answers.append(Answer(started, time.monotonic(), status, version, classes))

        async def traffic_since(
            moment: float, count: int = CONCURRENCY, timeout: float = 30
        ) -> None:
            """Wait until ``count`` requests sent after ``moment`` have been answered."""
            until = time.monotonic() + timeout
            while sum(a.started > moment for a in answers) < count and time.monotonic() < until:
                await asyncio.sleep(0.05)

        async def swapper(http: httpx.AsyncClient) -> None:
            for k in range(1, SWAPS + 1):
                await traffic_since(swaps[-1][2])  # the current champion answers for a while first
                version = await asyncio.to_thread(publish, registry, exports, k, champion=False)
                export_of[version] = k
                set_at = time.monotonic()
                await asyncio.to_thread(registry.set_alias, MODEL, "champion", version)
                while True:  # the swap is complete when the server routes the label to it
                    r = await http.get(f"{running.url}/v1/models/{MODEL}/labels/champion")
                    if r.headers.get("X-Model-Version") == str(version):
                        break
                    await asyncio.sleep(0.02)
                swaps.append((version, set_at, time.monotonic()))
            await traffic_since(swaps[-1][2])

        async def main() -> None:
            stop = asyncio.Event()
            limits = httpx.Limits(max_connections=CONCURRENCY + 4)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                clients = [asyncio.ensure_future(client(stop, http, k)) for k in range(CONCURRENCY)]
                await swapper(http)
                stop.set()
                await asyncio.gather(*clients)

        asyncio.run(main())
        time.sleep(0.5)
        metrics = httpx.get(f"{running.url}/metrics").text

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
    assert len(answers) > 200

    # Each version answered with its own model's classes.
    for a in answers:
        assert a.classes == tuple(exports.labels(export_of[a.version])), a
    # Version v was champion from its alias move until the next swap completed.
    windows = {}
    for i, (version, set_at, _) in enumerate(swaps):
        until = swaps[i + 1][2] if i + 1 < len(swaps) else float("inf")
        windows[version] = (set_at, until)
    for a in answers:
        start, end = windows[a.version]
        assert a.ended >= start and a.started <= end, (
            f"version {a.version} answered outside its time: {a}"
        )
    # Once a swap completed, new requests went to the new version (until the next alias move).
    for i, (version, _, seen) in enumerate(swaps[1:], start=1):
        next_move = swaps[i + 1][1] if i + 1 < len(swaps) else float("inf")
        after = [a for a in answers if seen < a.started and a.ended < next_move]
        assert after and all(a.version == version for a in after), (
            version,
            {a.version for a in after},
        )
    served = {a.version for a in answers}
    assert served == set(windows), f"versions that answered: {served}"
    # The old versions were unloaded; only the last champion is in memory.
    loaded = [line for line in metrics.splitlines() if line.startswith("evergreen_model_loaded{")]
    assert loaded == [f'evergreen_model_loaded{{model="{MODEL}",version="{swaps[-1][0]}"}} 1.0'], (
        loaded
    )
    assert f'evergreen_model_swaps_total{{model="{MODEL}"}} {float(SWAPS)}' in metrics


def test_a_version_that_fails_warm_up_never_gets_traffic(exports: Exports, tmp_path: Path):
    tf = tensorflow()

    class Broken(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            tf.debugging.assert_equal(tf.size(text), -1, message="this model always fails")
            return {"scores": tf.zeros([tf.size(text), 2])}

    broken_dir = tmp_path / "broken"
    module = Broken()
    tf.saved_model.save(module, str(broken_dir), signatures={"serving_default": module.serve})

    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    settings = ServingConfig(port=0, poll_seconds=0.1, audit_log=os.devnull)
    with ServerThread(build(registry.root, settings), settings) as running:
        broken = registry.publish(MODEL, broken_dir, {}).version
        registry.set_alias(MODEL, "champion", broken)
        for _ in range(200):
            status = httpx.get(f"{running.url}/v1/models/{MODEL}").json()["model_version_status"]
            if any(s["state"] == "END" for s in status):
                break
            time.sleep(0.05)
        r = httpx.post(f"{running.url}/v1/models/{MODEL}:predict", json={"instances": ["tea"]})
        ready = httpx.get(f"{running.url}/v2/health/ready")

    failed = next(s for s in status if s["version"] == str(broken))
    assert failed["state"] == "END" and "warm-up call" in failed["status"]["error_message"]
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"  # the old champion stays
    assert ready.status_code == 200
