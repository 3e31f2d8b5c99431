"""``evergreen watch``: a long-running process that trains when enough new data has arrived.

The watcher looks at the data folder every ``watch.poll_seconds``. New or changed span files
are *pending*; a run (exactly what ``evergreen run`` does) starts once the pending spans hold
``watch.min_rows`` rows, or once the oldest pending data has waited ``watch.max_wait_seconds``.
One process serves every update, so TensorFlow and the metadata store stay open between runs:
an update pays for its new data, not for a fresh interpreter and TensorFlow's import.

* One watcher per pipeline: the watcher lock (see :mod:`evergreen.lock`) is held for the
  process's life. The writer lock is held only during a run, so ``rollback`` works meanwhile.
* SIGTERM or SIGINT: the current run finishes, then the process exits 0. A second signal stops
  at once; the run is abandoned the way a killed one is, and the next run resumes it.
* One log line per event on standard output, and Prometheus metrics on
  ``watch.metrics_host:watch.metrics_port`` (``/metrics``).
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from evergreen.config import Config
from evergreen.errors import EvergreenError, NoSpanFiles, PipelineBusy
from evergreen.lock import PipelineLock
from evergreen.project import Project
from evergreen.records import RunRecord
from evergreen.spans import SpanFiles

_SEVERITY_LEVEL = {None: 0, "none": 0, "minor": 1, "major": 2}


@dataclass(frozen=True)
class Pending:
    """New data not trained on yet: span files not ingested as they are now."""

    spans: tuple[int, ...]
    rows: int


class WatchMetrics:
    """What the watcher exports to Prometheus (one registry per watcher)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "evergreen_watch_runs",
            "Span runs by mode (full, incremental, block) or failed.",
            ["mode"],
            registry=self.registry,
        )
        self.update_seconds = Histogram(
            "evergreen_watch_update_seconds",
            "Seconds from a run's start to its end, per span run.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.rows = Counter("evergreen_watch_rows", "New rows trained on.", registry=self.registry)
        self.last_success = Gauge(
            "evergreen_watch_last_success_timestamp_seconds",
            "Unix time of the last run that ended without error.",
            registry=self.registry,
        )
        self.pending_rows = Gauge(
            "evergreen_watch_pending_rows",
            "Rows in new span files waiting for watch.min_rows or watch.max_wait_seconds.",
            registry=self.registry,
        )
        self.drift = Gauge(
            "evergreen_watch_drift_severity",
            "Drift of the latest trained span: 0 none, 1 minor, 2 major.",
            registry=self.registry,
        )
        for mode in ("full", "incremental", "block", "failed"):
            self.runs.labels(mode)  # every series exists from the first scrape


class Watcher:
    """Watches one pipeline's data folder and runs the loop on new data.

    Args:
        config: the pipeline config; its ``[watch]`` section says when to run.
        log: where the one-line-per-event log goes; default ``print`` (flushed).
        clock: seconds since an arbitrary point; default ``time.monotonic``.
    """

    def __init__(
        self,
        config: Config,
        *,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.cfg = config.watch
        self.metrics = WatchMetrics()
        self._log = log or (lambda line: print(line, flush=True))
        self._clock = clock
        self._stop = threading.Event()
        self._running = False
        self._waiting_since: float | None = None
        self._last_pending: Pending | None = None

    # -- life cycle ------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Watch until SIGTERM/SIGINT; the watcher lock is held throughout.

        Raises:
            PipelineBusy: another watcher watches this pipeline.
        """
        with (
            Project(self.config) as project,
            PipelineLock(project.store, "evergreen watch", role="watcher"),
        ):
            server, _ = start_http_server(
                self.cfg.metrics_port, self.cfg.metrics_host, registry=self.metrics.registry
            )
            self._install_signal_handlers()
            self.log(
                f"watching {self.config.resolve(self.config.data.pattern)} for pipeline "
                f"{self.config.name!r} (min_rows {self.cfg.min_rows}, max_wait "
                f"{self.cfg.max_wait_seconds:g} s, poll {self.cfg.poll_seconds:g} s); metrics on "
                f"http://{self.cfg.metrics_host}:{server.server_port}/metrics"
            )
            try:
                self.catch_up(project)
                while not self._stop.is_set():
                    self.tick(project)
                    self._stop.wait(self.cfg.poll_seconds)
            finally:
                server.shutdown()
        self.log("stopped")

    def stop(self) -> None:
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: Any) -> None:
            if self._stop.is_set() and self._running:
                raise KeyboardInterrupt  # a second signal: abandon the run now
            self._stop.set()
            name = signal.Signals(signum).name
            self.log(
                f"{name}: stopping after the current run (again to stop now)"
                if self._running
                else f"{name}: stopping"
            )

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- one look at the data ---------------------------------------------------------------
    def catch_up(self, project: Project) -> list[RunRecord]:
        """At start: finish what an earlier watcher or run left (ingested, not trained)."""
        if self.pending(project).spans or not project.store.spans():
            return []  # new data (the first tick decides when to run), or nothing yet
        return self.run(project, Pending((), 0))

    def tick(self, project: Project) -> list[RunRecord]:
        """Look for new data once; run the loop if it is due. Returns the run's records."""
        pending = self.pending(project)
        self.metrics.pending_rows.set(pending.rows)
        if not pending.spans:
            self._waiting_since = None
            return []
        now = self._clock()
        if self._waiting_since is None:
            self._waiting_since = now
        waited = now - self._waiting_since
        if pending.rows < self.cfg.min_rows and waited < self.cfg.max_wait_seconds:
            if pending != self._last_pending:
                self.log(
                    f"waiting: {pending.rows} new rows in span(s) {_spans(pending)}, below "
                    f"watch.min_rows = {self.cfg.min_rows} (runs anyway after "
                    f"{self.cfg.max_wait_seconds:g} s)"
                )
                self._last_pending = pending
            return []
        self._last_pending = None
        return self.run(project, pending)

    def pending(self, project: Project) -> Pending:
        """Span files whose content is not what was ingested (no TensorFlow, no data read)."""
        ingested = {r.span: r.fingerprint for r in project.store.spans()}
        try:
            found_spans = project.discover()
        except NoSpanFiles:
            return Pending((), 0)  # a fresh deployment: wait for the first span
        new = [
            found
            for found in found_spans
            if ingested.get(found.span) != found.fingerprint(project.digest)
        ]
        return Pending(tuple(s.span for s in new), sum(self._rows(s) for s in new))

    def _rows(self, span: SpanFiles) -> int:
        return sum(count_rows(path, self.config.data.format) for path in span.files)

    def run(self, project: Project, pending: Pending) -> list[RunRecord]:
        """One ``evergreen run``; every span record becomes a log line and metrics."""
        from evergreen.loop import TrainingLoop

        self._running = True  # before the log line: a signal seen after it finishes the run
        self.log(
            f"running: span(s) {_spans(pending)}, {pending.rows} new rows"
            if pending.spans
            else "running: catching up on spans ingested but not trained"
        )
        started = self._clock()
        try:
            records = TrainingLoop(project).run()
        except PipelineBusy as e:
            self.log(f"not run: {e}")  # a manual run holds the writer lock: try again later
            return []
        except (EvergreenError, KeyboardInterrupt) as e:
            self.metrics.runs.labels("failed").inc()
            self.log(f"failed: {e}" if str(e) else "abandoned: stopped during the run")
            if isinstance(e, KeyboardInterrupt):
                self._stop.set()
            return []
        finally:
            self._running = False
        self._waiting_since = None
        self.metrics.pending_rows.set(self.pending(project).rows)
        seconds = self._clock() - started
        for record in records:
            self._record(record, seconds / max(len(records), 1))
        if not any(r.mode == "block" for r in records):
            self.metrics.last_success.set(time.time())
        return records

    def _record(self, record: RunRecord, seconds: float) -> None:
        self.metrics.runs.labels(record.mode).inc()
        self.metrics.update_seconds.observe(seconds)
        if record.mode != "block":
            self.metrics.rows.inc(record.rows_new)
        self.metrics.drift.set(_SEVERITY_LEVEL.get(record.drift, 0))
        outcome = (
            f"published version {record.version}"
            if record.blessed and record.version is not None
            else "; ".join(record.verdict) or "not published"
        )
        self.log(
            f"span {record.span}: {record.mode} ({record.reason}), "
            f"{record.rows_new} new rows, {seconds:.1f} s: {outcome}"
        )

    def log(self, line: str) -> None:
        self._log(f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} {line}")


def count_rows(path: Path, fmt: str) -> int:
    """About how many rows a span file holds, cheaply (lines; parquet's metadata; 1 image).

    A CSV's quoted line breaks make this an overestimate, which only makes a run come sooner.
    A TFRecord file counts as ``watch.min_rows`` reached (1 << 30): counting would read it.
    """
    if fmt == "images":
        return 1
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    if fmt == "tfrecord":
        return 1 << 30
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines - (1 if fmt == "csv" else 0), 0)


def _spans(pending: Pending) -> str:
    return ", ".join(map(str, pending.spans))
