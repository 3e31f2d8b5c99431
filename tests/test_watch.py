"""``evergreen watch`` for real: a subprocess picks up spans dropped into its data folder."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from evergreen import config as config_mod
from evergreen.project import Project
from evergreen.registry import Registry
from tests.conftest import dataset, read_csv, write_config, write_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
EXTRA = """[train]
epochs = 2
full_after_growth = 0  # each span trained once: no quality-debt challenger

[drift]
full_retrain_on = "never"

[watch]
min_rows = 100
poll_seconds = 0.2
"""


class Lines:
    """The watcher's standard output, line by line, read on a thread (no read blocks a test)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        """The next line matching ``pattern``; fails if the process ends first."""
        while True:
            try:
                line = self._queue.get(timeout=600)  # a bound against a hang, not a timing
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r}; saw {self.seen}")
            if line is None:
                pytest.fail(f"watcher ended before {pattern!r}; saw {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match


def _drop(tmp_path: Path, span: int, rows: list[list[str]], header: list[str]) -> None:
    """Write a span folder beside the data folder, then move it in at once."""
    incoming = tmp_path / "incoming" / f"span-{span}"
    write_csv(incoming / "reviews.csv", header, rows)
    (tmp_path / "data").mkdir(exist_ok=True)
    os.rename(incoming, tmp_path / "data" / f"span-{span}")


@pytest.mark.slow
def test_watch_trains_each_new_span_once_and_stops_cleanly(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    config = write_config(
        tmp_path,
        label="score",
        features={"product": "categorical", "review": "text"},
        extra=EXTRA,
    )
    command = [sys.executable, "-m", "evergreen", "watch", "-c", str(config)]
    watcher = subprocess.Popen(
        [*command, "--metrics-port", "0"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(watcher)
    try:
        # A fresh deployment: no data yet, and the watcher waits for it.
        port = int(lines.expect(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        _drop(tmp_path, 1, rows[:300], header)
        lines.expect(r"span 1: full .*published version 1")

        second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert "already watched by `evergreen watch`" in second.stderr
        assert f"pid {watcher.pid}" in second.stderr and "Traceback" not in second.stderr

        # Below watch.min_rows the span waits; a second file brings it over and it is trained.
        _drop(tmp_path, 2, rows[300:350], header)
        lines.expect(r"waiting: 50 new rows in span\(s\) 2, below watch.min_rows = 100")
        part = tmp_path / "data" / "span-2" / "more.csv.part"
        write_csv(part, header, rows[350:450])
        os.rename(part, part.with_suffix(""))
        lines.expect(r"running: span\(s\) 2, 150 new rows")
        lines.expect(r"span 2: incremental .*published version 2")

        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert 'evergreen_watch_runs_total{mode="full"} 1.0' in metrics
        assert 'evergreen_watch_runs_total{mode="incremental"} 1.0' in metrics
        assert "evergreen_watch_pending_rows 0.0" in metrics

        # SIGTERM during a run: the run finishes, then the watcher exits 0.
        _drop(tmp_path, 3, rows[450:600], header)
        lines.expect(r"running: span\(s\) 3")
        watcher.send_signal(signal.SIGTERM)
        lines.expect(r"SIGTERM: stopping after the current run")
        lines.expect(r"span 3: incremental .*published version 3")
        lines.expect(r"stopped")
        assert watcher.wait(timeout=300) == 0, watcher.stderr.read() if watcher.stderr else ""
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()

    cfg = config_mod.load(config)
    assert [v.version for v in Registry(cfg.registry_dir).versions(cfg.name)] == [1, 2, 3]
    with Project(cfg) as project:
        trained = [r.span for r in project.store.runs(component="train") if r.status == "succeeded"]
        assert sorted(trained) == [1, 2, 3]  # each span trained exactly once
        assert not [r for r in project.store.runs() if r.status == "running"]
