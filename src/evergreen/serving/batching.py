"""Dynamic batching: rows of concurrent requests merged into one model call.

One :class:`DynamicBatcher` serves one (model, version, signature). A request that finds the
batcher idle is called at once when there is no sign of company: ``max_delay = 0``, or each of
the last few calls saw a single request (one client at a time never waits ``max_delay``).
Otherwise it waits in a bounded queue; a dispatcher takes the oldest request, waits up to
``max_delay`` for others to arrive (or until ``max_batch_size`` rows are queued), concatenates
their inputs on axis 0, calls the model in a thread (the event loop keeps accepting meanwhile)
and hands each request its slice of the outputs. While a call runs, new requests pile up, so
under load batches fill without waiting. A small ``max_delay`` (2 ms) still pays under load:
without it, clients split into two cohorts that take turns, each half the batch size
(bench/bench_serving.py).

- A full queue answers :class:`~evergreen.errors.Unavailable` (503) at once.
- Each request carries a deadline: a request whose deadline passes while queued is dropped
  before the call and answered :class:`~evergreen.errors.DeadlineExceeded` (504).
- Only requests whose inputs have the same per-row shapes are merged.
- A request of more than ``max_batch_size`` rows is split into calls of ``max_batch_size``
  rows, queued one after the other, so requests that arrive meanwhile run between its parts:
  one big request cannot hold the model for the time of all its rows.
- ``max_batch_size=1`` is "batching off": one model call per request, ``workers`` at a time
  (requests are not split then; ``serving.max_rows_per_request`` bounds them).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evergreen.errors import BadRequest, DeadlineExceeded, Unavailable

Inputs = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass
class _Item:
    inputs: Inputs
    rows: int
    key: tuple[Any, ...]
    deadline: float
    future: asyncio.Future[Outputs]
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Merge concurrent calls of ``fn`` into batches.

    Args:
        fn: the model call, ``{input: array} -> {output: array}``, first axis the batch; it runs
            in ``executor`` threads, never on the event loop.
        max_batch_size: most rows per call; 1 turns merging off. A request with more rows is
            split into calls of this many rows, one after the other.
        max_delay: seconds the oldest queued request waits for others; default 0: a call
            starts as soon as a worker is free, and batches fill while the previous call runs.
            A request arriving at an idle batcher whose recent calls saw one request each
            runs at once whatever max_delay is.
        max_queue: most requests waiting; beyond, submit raises Unavailable. Default 1024.
        workers: calls in flight at once. Default 1.
        executor: where ``fn`` runs; default the loop's default executor.
        on_batch: called with each call's row count (metrics).
        on_queue: called with +n / -n as requests enter and leave the queue (metrics).
    """

    def __init__(
        self,
        fn: Callable[[Inputs], Outputs],
        *,
        max_batch_size: int = 32,
        max_delay: float = 0.0,
        max_queue: int = 1024,
        workers: int = 1,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
        name: str = "batcher",
    ) -> None:
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue = max_queue
        self.workers = workers
        self.executor = executor
        self.on_batch = on_batch or (lambda n: None)
        self.on_queue = on_queue or (lambda n: None)
        self.name = name
        self.calls = 0  # model calls made, for tests and metrics
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._in_flight = 0  # model calls running
        # Requests in a finished call plus those queued then, for the last few calls: about
        # how many clients are sending at once, so how many are worth waiting for.
        self._company: deque[int] = deque(maxlen=8)
        self._free_since = 0.0  # when the latest call finished

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the workers on the running loop (done by the first submit if not before)."""
        if self._tasks:
            return
        self._wakeup = asyncio.Event()
        # One dispatcher starts up to `workers` concurrent calls; it never waits on a call.
        self._tasks = [asyncio.get_running_loop().create_task(self._work(), name=self.name)]

    async def submit(self, inputs: Inputs, deadline: float) -> Outputs:
        """Queue one request's inputs; its rows of every output once the batch has run.

        Args:
            inputs: one array per input, all with the same first dimension (rows).
            deadline: ``time.monotonic()`` value after which the request is abandoned.

        Raises:
            Unavailable: the queue is full, or the batcher is closed.
            DeadlineExceeded: the deadline passed before the result came.
        """
        rows = next(iter(inputs.values())).shape[0]
        if self.max_batch_size > 1 and rows > self.max_batch_size:
            return await self._submit_split(inputs, rows, deadline)
        return await self._submit_one(inputs, rows, deadline)

    async def _submit_split(self, inputs: Inputs, rows: int, deadline: float) -> Outputs:
        """``inputs`` in parts of max_batch_size rows, each queued once the previous is done
        (others queued meanwhile go first); the parts' outputs concatenated."""
        size = self.max_batch_size
        parts: list[Outputs] = []
        for start in range(0, rows, size):
            part = {name: a[start : start + size] for name, a in inputs.items()}
            parts.append(await self._submit_one(part, min(size, rows - start), deadline))
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    async def _submit_one(self, inputs: Inputs, rows: int, deadline: float) -> Outputs:
        if self._closed:
            raise Unavailable(f"{self.name} is shutting down; retry the request")
        self.start()
        if len(self._queue) >= self.max_queue:
            raise Unavailable(
                f"{self.name}: {len(self._queue)} requests are already queued "
                f"(serving.max_queue = {self.max_queue}); retry later or raise max_queue"
            )
        key = tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(inputs.items()))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        item = _Item(inputs, rows, key, deadline, future)
        assert self._wakeup is not None
        if (
            not self._queue
            and self._in_flight < self.workers
            and (self.max_delay <= 0 or max(self._company, default=0) <= 1)
        ):
            # Idle, and no sign of company coming (not asked to wait, or recent calls saw one
            # request each): call at once from here, sparing the hop through the dispatcher (a
            # loop turn, about half a millisecond at low load). Requests that come meanwhile
            # queue and are batched when this call is done.
            self._call([item], loop)
        else:
            self._queue.append(item)
            self.on_queue(1)
            self._wakeup.set()
        # A timer on the loop's clock (time.monotonic), cheaper than wait_for on the hot path.
        timer = loop.call_at(deadline, self._expire, item)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, item: _Item) -> None:
        if not item.future.done():  # the worker skips it if it is still queued
            item.future.set_exception(
                DeadlineExceeded(
                    f"{self.name}: no answer within the request deadline "
                    f"({(time.monotonic() - item.enqueued) * 1000:.0f} ms); the server is "
                    "overloaded or serving.request_timeout_ms is too short"
                )
            )

    async def close(self) -> None:
        """Stop the workers; requests still queued are answered 503."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        while self._queue:
            item = self._queue.popleft()
            self.on_queue(-1)
            if not item.future.done():
                item.future.set_exception(Unavailable(f"{self.name} was unloaded; retry"))

    # ------------------------------------------------------------------------------ worker

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue or self._in_flight >= self.workers:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill(self._queue[0])
            if self._in_flight >= self.workers:
                continue
            batch = self._take()
            if batch:
                self._call(batch, loop)  # not awaited: up to `workers` calls run at once

    def _call(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> asyncio.Future[Outputs]:
        """Start one model call for ``batch`` in the executor; its results go to each future."""
        merged = (
            batch[0].inputs
            if len(batch) == 1
            else {
                name: np.concatenate([item.inputs[name] for item in batch])
                for name in batch[0].inputs
            }
        )
        self.on_batch(sum(item.rows for item in batch))
        self.calls += 1
        self._in_flight += 1
        call = loop.run_in_executor(self.executor, self.fn, merged)

        def done(call: asyncio.Future[Outputs]) -> None:
            self._in_flight -= 1
            self._company.append(len(batch) + len(self._queue))
            self._free_since = time.monotonic()
            if self._wakeup is not None and self._queue:
                self._wakeup.set()
            if call.cancelled():
                error: BaseException | None = Unavailable(f"{self.name}: the call was cancelled")
            else:
                error = call.exception()
            if _rejected_input(error):
                if len(batch) > 1:
                    # One request's bad input (say, bytes that are not an image) must not fail
                    # the requests merged with it: each goes again on its own.
                    for item in batch:
                        if not item.future.done():
                            self._call([item], loop)
                    return
                error = BadRequest(f"the model rejected the input: {_first_message(error)}")
            start = 0
            for item in batch:
                end = start + item.rows
                if not item.future.done():
                    if error is not None:  # the model failed: every request of the batch hears it
                        item.future.set_exception(error)
                    else:
                        outputs = call.result()
                        item.future.set_result({k: v[start:end] for k, v in outputs.items()})
                start = end

        call.add_done_callback(done)
        return call

    async def _fill(self, first: _Item) -> None:
        """Wait until as many requests are queued as recent calls had company (or
        max_batch_size rows), for at most max_delay since the oldest request came or the
        model became free, whichever is later.

        Waiting from when the model became free breaks up cohorts: without it, under load
        the clients split into two groups that take turns, each getting half the batch.
        Waiting only for as many requests as recently came at once keeps a few clients
        (fewer than max_batch_size) from waiting max_delay for company that never comes.
        """
        if self.max_batch_size <= 1 or self.max_delay <= 0:
            return
        assert self._wakeup is not None
        want = max(self._company, default=0)
        until = max(first.enqueued, self._free_since) + self.max_delay
        while len(self._queue) < want and sum(i.rows for i in self._queue) < self.max_batch_size:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
        """Pop the oldest live request and those after it with the same row shapes, up to the
        batch size; expired and abandoned requests are dropped on the way."""
        now = time.monotonic()
        batch: list[_Item] = []
        rows = 0
        kept: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():  # its caller gave up
                self.on_queue(-1)
                continue
            if item.deadline <= now:
                self.on_queue(-1)
                item.future.set_exception(
                    DeadlineExceeded(
                        f"{self.name}: the request waited {(now - item.enqueued) * 1000:.0f} ms "
                        "in the queue, past its deadline; the server is overloaded"
                    )
                )
                continue
            fits = not batch or (
                item.key == batch[0].key and rows + item.rows <= self.max_batch_size
            )
            if fits:
                batch.append(item)
                rows += item.rows
                self.on_queue(-1)
                if rows >= self.max_batch_size:
                    break
            else:
                kept.append(item)
        kept.extend(self._queue)
        self._queue = kept
        return batch


def _rejected_input(error: BaseException | None) -> bool:
    """TensorFlow's INVALID_ARGUMENT from inside the model: an input it cannot use."""
    return error is not None and type(error).__name__ == "InvalidArgumentError"


def _first_message(error: BaseException) -> str:
    """The line of a TensorFlow error that says what was wrong, without graph node noise."""
    text = getattr(error, "message", None) or str(error)
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(noise)
    ]
    return lines[0] if lines else text.strip()
