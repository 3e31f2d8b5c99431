"""Dynamic batching: merging, limits, the bounded queue, deadlines; then over HTTP with a model.

The batcher tests call a real (NumPy) function that records the batches it receives; the HTTP
test runs the exported text model.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from evergreen.config import ServingConfig
from evergreen.errors import DeadlineExceeded, Unavailable
from evergreen.registry import Registry
from evergreen.serving import DynamicBatcher, ServerThread, build
from tests.serving_support import MODEL, Exports, publish, shared_exports


class Doubler:
    """y = 2x, recording each call's batch size; optionally slow, optionally failing."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.fail = fail
        self.threads: set[str] = set()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        self.sizes.append(len(inputs["x"]))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ValueError("the model broke")
        return {"y": inputs["x"] * 2, "n": np.full(len(inputs["x"]), len(inputs["x"]))}


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32)}


def later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def under_load(batcher: DynamicBatcher) -> None:
    """Three requests at once: the first runs alone, the other two are merged, so the batcher
    has seen company and waits for it from then on."""
    await asyncio.gather(*(batcher.submit(rows(-1), later()) for _ in range(3)))
    assert batcher.fn.sizes[-1] == 2  # type: ignore[attr-defined]
    batcher.fn.sizes.clear()  # type: ignore[attr-defined]


def test_concurrent_requests_are_merged_and_split_back():
    async def main() -> None:
        fn = Doubler()
        batcher = DynamicBatcher(fn, max_batch_size=64, max_delay=0.05)
        await under_load(batcher)
        results = await asyncio.gather(
            *(batcher.submit(rows(i, i + 0.5), later()) for i in range(10))
        )
        await batcher.close()
        assert fn.sizes == [20]  # ten requests, one call
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out["y"], [2 * i, 2 * i + 1])
            assert out["n"].tolist() == [20, 20]
        assert "MainThread" not in fn.threads  # the model ran off the event loop's thread

    asyncio.run(main())


def test_with_delay_a_lone_request_runs_at_once_and_a_burst_after_it_is_merged():
    async def main() -> None:
        fn = Doubler()
        batcher = DynamicBatcher(fn, max_batch_size=64, max_delay=0.5)
        for i in range(3):  # one client: nothing to wait for, so no request waits max_delay
            started = time.monotonic()
            out = await batcher.submit(rows(i), later())
            assert time.monotonic() - started < 0.25 and float(out["y"][0]) == 2 * i
        assert fn.sizes == [1, 1, 1]
        # A burst: the first request finds the batcher idle and runs alone; the rest queue
        # meanwhile and, company having come, wait (up to max_delay) for each other.
        await asyncio.gather(*(batcher.submit(rows(i), later()) for i in range(10)))
        assert fn.sizes == [1, 1, 1, 1, 9]
        await batcher.close()

    asyncio.run(main())


def test_without_delay_an_idle_batcher_calls_at_once_and_batches_what_queues_meanwhile():
    async def main() -> None:
        fn = Doubler(delay=0.1)
        batcher = DynamicBatcher(fn, max_batch_size=64, max_delay=0.0)
        first = asyncio.ensure_future(batcher.submit(rows(0), later()))
        await asyncio.sleep(0.02)  # the first call is running
        rest = [batcher.submit(rows(i), later()) for i in range(1, 10)]
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        assert fn.sizes == [1, 9]
        assert [float(r["y"][0]) for r in results] == [2.0 * i for i in range(10)]

    asyncio.run(main())


def test_batches_never_exceed_the_maximum_and_big_requests_are_split():
    async def main() -> None:
        fn = Doubler()
        batcher = DynamicBatcher(fn, max_batch_size=8, max_delay=0.05)
        small = [batcher.submit(rows(1, 2, 3), later()) for _ in range(5)]  # 15 rows
        big = batcher.submit(rows(*range(20)), later())
        results = await asyncio.gather(*small, big)
        await batcher.close()
        assert max(fn.sizes) == 8  # the 20-row request went in parts of at most 8 rows
        assert sum(fn.sizes) == 35
        np.testing.assert_array_equal(results[-1]["y"], np.arange(20) * 2)

    asyncio.run(main())


def test_only_requests_with_the_same_row_shape_are_merged():
    async def main() -> None:
        fn = Doubler()
        batcher = DynamicBatcher(fn, max_batch_size=64, max_delay=0.05)
        await under_load(batcher)
        wide = {"x": np.ones((2, 3), np.float32)}
        narrow = {"x": np.ones((2, 4), np.float32)}
        out = await asyncio.gather(
            batcher.submit(wide, later()),
            batcher.submit(narrow, later()),
            batcher.submit(wide, later()),
        )
        await batcher.close()
        assert sorted(fn.sizes) == [2, 4]
        assert out[1]["y"].shape == (2, 4) and out[0]["y"].shape == (2, 3)

    asyncio.run(main())


def test_full_queue_answers_unavailable_at_once():
    async def main() -> None:
        fn = Doubler(delay=0.3)
        batcher = DynamicBatcher(fn, max_batch_size=1, max_queue=2, workers=1)
        first = asyncio.ensure_future(batcher.submit(rows(1), later()))
        await asyncio.sleep(0.05)  # the worker has taken it: the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(rows(2), later())) for _ in range(2)]
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="max_queue = 2"):
            await batcher.submit(rows(3), later())
        assert time.monotonic() - started < 0.05
        await asyncio.gather(first, *queued)
        await batcher.close()

    asyncio.run(main())


def test_a_request_past_its_deadline_is_dropped_not_run():
    async def main() -> None:
        fn = Doubler(delay=0.3)
        batcher = DynamicBatcher(fn, max_batch_size=1, workers=1)
        slow = asyncio.ensure_future(batcher.submit(rows(1), later()))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded, match="deadline"):
            await batcher.submit(rows(2), time.monotonic() + 0.05)
        await slow
        await asyncio.sleep(0.05)
        await batcher.close()
        assert fn.sizes == [1]  # the expired request never reached the model

    asyncio.run(main())


def test_a_model_error_reaches_every_request_of_the_batch():
    async def main() -> None:
        batcher = DynamicBatcher(Doubler(fail=True), max_batch_size=8, max_delay=0.05)
        results = await asyncio.gather(
            *(batcher.submit(rows(i), later()) for i in range(3)), return_exceptions=True
        )
        await batcher.close()
        assert [str(r) for r in results] == ["the model broke"] * 3

    asyncio.run(main())


def test_batching_off_makes_one_call_per_request_and_the_loop_keeps_running():
    async def main() -> None:
        fn = Doubler(delay=0.05)
        batcher = DynamicBatcher(fn, max_batch_size=1, workers=2)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.ensure_future(ticker())
        await asyncio.gather(*(batcher.submit(rows(i), later()) for i in range(6)))
        tick.cancel()
        await batcher.close()
        assert fn.sizes == [1] * 6
        assert ticks >= 10  # ~150 ms of model time, and the loop ticked throughout

    asyncio.run(main())


# -- over HTTP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    exports: Exports = shared_exports(tmp_path_factory)
    registry = Registry(tmp_path_factory.mktemp("batching") / "registry")
    publish(registry, exports, 0)
    return registry


@pytest.fixture(scope="module")
def batching_server(registry: Registry) -> Iterator[str]:
    settings = ServingConfig(port=0, max_batch_size=32, batch_timeout_ms=20, audit_log=os.devnull)
    with ServerThread(build(registry.root, settings), settings) as running:
        yield running.url


def test_concurrent_http_requests_share_model_calls_and_get_their_own_rows(batching_server: str):
    texts = [f"review number {i}: {'great' if i % 2 else 'stale'} coffee" for i in range(24)]

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=batching_server, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(f"/v1/models/{MODEL}:predict", json={"instances": [t]})
                    for t in texts
                )
            )

    before = _batch_stats(batching_server)
    responses = asyncio.run(main())
    after = _batch_stats(batching_server)
    assert all(r.status_code == 200 for r in responses)
    calls, rows = after[0] - before[0], after[1] - before[1]
    assert rows == 24 and calls < 24 / 3, f"{calls} model calls for 24 concurrent requests"

    together = httpx.post(
        f"{batching_server}/v1/models/{MODEL}:predict", json={"instances": texts}
    ).json()
    for r, expected in zip(responses, together["predictions"], strict=True):
        np.testing.assert_allclose(
            r.json()["predictions"][0]["scores"], expected["scores"], rtol=1e-5
        )


def test_request_deadline_answers_504(registry: Registry):
    settings = ServingConfig(
        port=0, request_timeout_ms=1, max_batch_size=32, batch_timeout_ms=50, audit_log=os.devnull
    )
    with ServerThread(build(registry.root, settings), settings) as running:
        r = httpx.post(f"{running.url}/v1/models/{MODEL}:predict", json={"instances": ["tea"]})
    assert r.status_code == 504 and "request_timeout_ms" in r.json()["error"]


def _batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    values = {}
    for line in text.splitlines():
        for name in ("evergreen_batch_size_count", "evergreen_batch_size_sum"):
            if line.startswith(name + "{") and 'signature="serving_default"' in line:
                values[name] = float(line.rsplit(" ", 1)[1])
    return values.get("evergreen_batch_size_count", 0.0), values.get(
        "evergreen_batch_size_sum", 0.0
    )
