"""One writer per pipeline: a second writer is refused with one line; a killed holder's lock is free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.errors import PipelineBusy
from evergreen.lock import PipelineLock
from evergreen.metadata import MetadataStore
from evergreen.project import Project
from tests.conftest import dataset, read_csv, write_config, write_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

# A writer that holds the lock until its standard input closes (or it is killed).
HOLDER = """
import sys
from evergreen import config
from evergreen.project import Project
with Project(config.load(sys.argv[1], metadata_url=sys.argv[2] or None)) as p:
    with p.writing("evergreen run"):
        print("locked", flush=True)
        sys.stdin.read()
"""


def _project(tmp_path: Path, metadata_url: str = "") -> Path:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-1" / "reviews.csv", header, rows[:300])
    return write_config(
        tmp_path,
        label="score",
        features={"product": "categorical", "review": "text"},
        metadata_url=metadata_url,
    )


def _start_holder(config: Path, metadata_url: str = "") -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(config), metadata_url],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"  # blocks until the lock is held
    return holder


def test_second_writer_is_refused_until_the_first_releases(metadata_url: str) -> None:
    first = MetadataStore(metadata_url, "reviews")
    second = MetadataStore(metadata_url, "reviews")
    other_pipeline = MetadataStore(metadata_url, "tickets")
    try:
        with PipelineLock(first, "evergreen run"):
            with pytest.raises(PipelineBusy) as refused:
                PipelineLock(second, "evergreen ingest").acquire()
            message = str(refused.value)
            assert "'reviews' is busy" in message and "`evergreen run`" in message
            assert f"pid {os.getpid()}" in message
            with PipelineLock(other_pipeline, "evergreen run"):  # other pipelines are free
                pass
        with PipelineLock(second, "evergreen ingest"):  # released: the next writer gets it
            pass
    finally:
        for store in (first, second, other_pipeline):
            store.close()


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}", "reviews")
    lock = PipelineLock(store, "evergreen run")
    with lock:
        with lock:  # run → ingest
            assert lock.held
        assert lock.held
        with pytest.raises(PipelineBusy):
            PipelineLock(store, "evergreen ingest").acquire()
    assert not lock.held
    store.close()


def test_a_killed_holder_releases_the_lock(tmp_path: Path, metadata_url: str) -> None:
    config = _project(tmp_path, metadata_url)
    holder = _start_holder(config, metadata_url)
    cfg = config_mod.load(config, metadata_url=metadata_url)
    with Project(cfg) as project:
        with pytest.raises(PipelineBusy, match=f"pid {holder.pid}"):
            project.ingest()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        # The dead holder's lock is taken over, nothing to clean. PostgreSQL frees an advisory
        # lock when the dead client's backend exits, a moment after the client: poll for it.
        [outcome] = _when_free(project.ingest)
        assert outcome.status == "validated"


def _when_free(write, seconds: float = 60.0):
    """``write()`` once the lock is free; PipelineBusy for longer than ``seconds`` fails."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return write()
        except PipelineBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_cli_refuses_a_second_writer_with_one_line(tmp_path: Path) -> None:
    config = _project(tmp_path)
    holder = _start_holder(config)
    try:
        for command in (["ingest"], ["run"], ["rollback", "1"]):
            refused = subprocess.run(
                [sys.executable, "-m", "evergreen", *command, "-c", str(config)],
                env=ENV,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert refused.returncode == 1, refused.stderr
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("pipeline busy:"), refused.stderr
            assert f"pid {holder.pid}" in lines[0] and "Traceback" not in refused.stderr
    finally:
        holder.communicate("")  # closes stdin: the holder finishes and releases the lock
    assert holder.returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "evergreen", "ingest", "-c", str(config)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
