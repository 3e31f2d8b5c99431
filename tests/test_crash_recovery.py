"""``kill -9`` in the middle of ingesting a large span, then a re-run: ingested exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen import dedupe_index, examples
from evergreen.project import Project
from tests.conftest import dataset, read_csv, write_config, write_csv

ROWS = 120_000


def _large_span(project: Path) -> int:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    big = [
        [p, f"{review} (copy {i // len(rows)})", s]
        for i, (p, review, s) in enumerate(rows[i % len(rows)] for i in range(ROWS))
    ]
    write_csv(project / "data" / "span-1" / "big.csv", header, big)
    return len(big)


def _in_progress_shards(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*/**/part-*.tfrecord") if p.stat().st_size > 0]


@pytest.mark.slow
def test_kill_during_ingest_then_rerun_ingests_once(tmp_path: Path) -> None:
    project_dir = tmp_path / "big"
    rows = _large_span(project_dir)
    config = write_config(
        project_dir, label="score", features={"product": "categorical", "review": "text"}
    )
    cfg = config_mod.load(config)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "evergreen", "ingest", "-c", str(config)]

    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _in_progress_shards(cfg.artifacts_dir):
        assert victim.poll() is None, (
            f"ingest ended before it could be killed: {victim.stderr.read().decode()}"
        )
        assert time.monotonic() < deadline, "ingest never started writing shards"
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the span: shards and index rows are half written
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL

    with Project(cfg) as project:
        assert project.store.spans() == []  # nothing half-ingested is visible
        assert project.store.artifacts() == []
        assert dedupe_index.size(project.store) == 0

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr

    with Project(cfg) as project:
        [record] = project.store.spans()
        assert (record.span, record.version, record.status) == (1, 1, "validated")
        [examples_artifact] = project.store.artifacts(type="Examples")
        kept = sum(
            1
            for split in ("train", "eval")
            for _ in examples.iter_records(Path(examples_artifact.uri) / split)
        )
        assert kept == dedupe_index.size(project.store) == examples_artifact.properties["rows"]
        assert kept > 0.95 * rows  # only the dataset's own duplicates were removed
        statuses = sorted(r.status for r in project.store.runs() if r.component == "ingest")
        assert statuses == ["abandoned", "succeeded"]
    assert not list(cfg.artifacts_dir.rglob(".tmp-*"))
    assert len(list((cfg.artifacts_dir / "ingest" / "span-1").iterdir())) == 1
