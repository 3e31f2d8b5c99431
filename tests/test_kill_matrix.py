"""The kill matrix: ``kill -9`` at every step of ``evergreen run``, re-run, and nothing is lost.

A two-span fine foods stream: span 1 trained fully, then span 2 arrives and ``evergreen run`` is
killed right after each component's commit and in the middle of each (see tests/killpoint.py);
a plain ``evergreen run`` then completes it. The final state must equal an uninterrupted twin's:
the same registry versions with the same lineage and metrics, the same champion, the same
artifacts, no temporary folder and no run left 'running'. A kill during span 1's full training
is covered the same way from an empty pipeline, and so is a kill during the quality debt's
challenger (the full retrain that follows span 2's increment when the debt is on): the next run
resumes the challenge.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evergreen import config as config_mod
from evergreen.decision_log import DecisionLog
from evergreen.loop import TrainingLoop
from evergreen.project import Project
from evergreen.registry import CHAMPION, Registry
from tests.conftest import dataset, read_csv, write_config, write_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
REPO = Path(__file__).resolve().parents[1]
SPAN_ROWS = [400, 800]  # span 2 large enough that the increment beats the champion (v1)

# Kill points while span 2 (an incremental update) runs.
UPDATE_POINTS = [
    "mid:ingest",
    "after:ingest",
    "mid:statistics",
    "after:statistics",
    "mid:validate",
    "after:validate",
    "mid:drift",
    "after:drift",
    "mid:featurize",
    "after:featurize",
    "mid:train",
    "after:train",
    "mid:evaluate",
    "after:evaluate",
    "mid:push",
    "push:published",
    "push:aliased",
    "after:push",
]
# Kill points of the first, full training (span 1 from an empty pipeline).
FIRST_POINTS = ["mid:fit-featurizer", "after:fit-featurizer", "after:evaluate", "push:aliased"]
# Kill points of the challenger (span 2's second training): nothing of it committed yet; its
# model committed, not yet judged; and the increment published, its record (which names the
# challenge) not saved yet.
CHALLENGE_POINTS = ["mid:train@2", "after:train@2", "after:push"]
# What of each span's decision (the loop's record) must not depend on a kill.
DECIDED = ("mode", "reason", "blessed", "version", "verdict", "challenger", "challenge")


def _write_span(project: Path, number: int) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    start = sum(SPAN_ROWS[: number - 1])
    write_csv(
        project / "data" / f"span-{number}" / "reviews.csv",
        header,
        rows[start : start + SPAN_ROWS[number - 1]],
    )


def _evergreen(config: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    prefix = (
        [sys.executable, "-m", "tests.killpoint", kill_at]
        if kill_at
        else [
            sys.executable,
            "-m",
            "evergreen",
        ]
    )
    return subprocess.run(
        [*prefix, *args, "-c", str(config)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _state(config: Path) -> dict[str, Any]:
    """What must not depend on whether a run was killed: registry, champion, artifacts."""
    cfg = config_mod.load(config)
    registry = Registry(cfg.registry_dir)
    versions = []
    for v in registry.versions(cfg.name):
        lineage = v.manifest["lineage"]
        versions.append(
            {
                "version": v.version,
                "spans": lineage["spans"],
                "mode": lineage["mode"],
                "reason": lineage["reason"],
                "parent": lineage["parent"],
                "cost": v.manifest["cost"],
                "metrics": json.dumps(v.manifest["metrics"], sort_keys=True),
            }
        )
    with Project(cfg) as project:
        artifacts = Counter(a.type for a in project.store.artifacts())
        running = [r.id for r in project.store.runs(limit=100_000) if r.status == "running"]
        log = DecisionLog(project.store)
        decisions = {
            span: {key: record.get(key) for key in DECIDED}
            for span, record in log.all_latest().items()
        }
        staged = log.staged()
    return {
        "versions": versions,
        "decisions": decisions,
        "staged": staged,
        "champion": registry.alias(cfg.name, CHAMPION),
        "artifacts": dict(artifacts),
        "running": running,
        "temporaries": sorted(str(p) for p in cfg.root.rglob(".tmp-*")),
    }


def _restore(snapshot: Path, project: Path) -> None:
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(snapshot, project)  # same path: the store's absolute URIs stay valid


def _kill_then_recover(config: Path, point: str) -> list[Any]:
    killed = _evergreen(config, "run", "--json", kill_at=point)
    assert killed.returncode == -signal.SIGKILL, (
        f"{point}: expected to be killed, got exit {killed.returncode}: {killed.stderr[-2000:]}"
    )
    # The re-run happens in this process (TensorFlow is already imported): the same library
    # call that `evergreen run` makes.
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
    assert all(r.mode != "block" for r in records), records
    return records


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Snapshots of the pipeline before each phase, and the uninterrupted twin's final state."""
    base = tmp_path_factory.mktemp("kill-matrix")
    project = base / "reviews"
    _write_span(project, 1)
    config = write_config(
        project,
        label="score",
        features={"product": "categorical", "review": "text"},
        # One increment per update, killed at each commit: span 2 doubles the data, and the
        # quality debt's challenger (a second training in the same run) is off here.
        extra='[train]\nepochs = 2\nfull_after_growth = 0\n\n[drift]\nfull_retrain_on = "never"\n',
    )
    empty = base / "snapshot-empty"
    shutil.copytree(project, empty)
    first = _evergreen(config, "run", "--json")
    assert first.returncode == 0, first.stderr
    after_first = _state(config)
    _write_span(project, 2)
    trained_once = base / "snapshot-span-1"
    shutil.copytree(project, trained_once)
    twin = _evergreen(config, "run", "--json")
    assert twin.returncode == 0, twin.stderr
    [record] = json.loads(twin.stdout)
    assert (record["mode"], record["blessed"]) == ("incremental", True), record
    return {
        "project": project,
        "config": config,
        "empty": empty,
        "after_first": after_first,
        "trained_once": trained_once,
        "twin": _state(config),
    }


@pytest.fixture(scope="module")
def challenged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same two spans with the quality debt on: span 2 doubles the data, so its increment
    is followed by a challenger. The snapshot after span 1, and the uninterrupted twin's state."""
    base = tmp_path_factory.mktemp("kill-challenge")
    project = base / "reviews"
    _write_span(project, 1)
    config = write_config(
        project,
        label="score",
        features={"product": "categorical", "review": "text"},
        extra='[train]\nepochs = 2\nfull_after_growth = 1.0\n\n[drift]\nfull_retrain_on = "never"\n',
    )
    first = _evergreen(config, "run", "--json")
    assert first.returncode == 0, first.stderr
    _write_span(project, 2)
    trained_once = base / "snapshot-span-1"
    shutil.copytree(project, trained_once)
    twin = _evergreen(config, "run", "--json")
    assert twin.returncode == 0, twin.stderr
    records = json.loads(twin.stdout)
    assert [(r["mode"], r.get("challenger", False)) for r in records] == [
        ("incremental", False),
        ("full", True),
    ], records
    assert records[0]["challenge"] and records[1]["reason"] == records[0]["challenge"]
    return {
        "project": project,
        "config": config,
        "trained_once": trained_once,
        "twin": _state(config),
        "challenger": records[1],
    }


@pytest.mark.slow
@pytest.mark.parametrize("point", CHALLENGE_POINTS)
def test_kill_during_the_challenger_resumes_the_challenge(
    challenged: dict[str, Any], point: str
) -> None:
    _restore(challenged["trained_once"], challenged["project"])
    records = _kill_then_recover(challenged["config"], point)
    if point == "after:push":  # the increment's record is saved first, from what was staged
        increment = records.pop(0)
        assert (increment.span, increment.mode) == (2, "incremental")
        assert increment.challenge == challenged["challenger"]["reason"]
    [resumed] = records
    assert resumed.challenger and resumed.span == 2 and resumed.mode == "full"
    expected = challenged["challenger"]
    assert (resumed.blessed, resumed.version) == (expected["blessed"], expected["version"])
    state = _state(challenged["config"])
    assert state["running"] == [] and state["temporaries"] == []
    assert state == challenged["twin"], point
    with Project(config_mod.load(challenged["config"])) as project:
        assert TrainingLoop(project).run() == []  # the challenge is not owed twice


@pytest.mark.slow
@pytest.mark.parametrize("point", UPDATE_POINTS)
def test_kill_during_an_update_recovers_to_the_twin(stream: dict[str, Any], point: str) -> None:
    _restore(stream["trained_once"], stream["project"])
    _kill_then_recover(stream["config"], point)
    state = _state(stream["config"])
    assert state["running"] == [] and state["temporaries"] == []
    assert state == stream["twin"], point


@pytest.mark.slow
@pytest.mark.parametrize("point", FIRST_POINTS)
def test_kill_during_the_first_training_recovers(stream: dict[str, Any], point: str) -> None:
    _restore(stream["empty"], stream["project"])
    _kill_then_recover(stream["config"], point)
    assert _state(stream["config"]) == stream["after_first"], point


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_first_finishes(stream: dict[str, Any]) -> None:
    _restore(stream["trained_once"], stream["project"])
    config = stream["config"]
    first = subprocess.Popen(
        [sys.executable, "-m", "evergreen", "run", "--json", "-c", str(config)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cfg = config_mod.load(config)
    lock = Path(f"{cfg.metadata_url.removeprefix('sqlite:///')}.{cfg.name}.writer.lock")
    try:
        while not _holder_recorded(config, first.pid):  # the first run holds the lock
            assert first.poll() is None, first.communicate()[1]
        second = _evergreen(config, "run", "--json")
    finally:
        out, errors = first.communicate(timeout=600)
    assert first.returncode == 0, errors
    assert second.returncode == 1 and second.stdout == ""
    assert (
        second.stderr.strip().startswith("pipeline busy:") and f"pid {first.pid}" in second.stderr
    )
    assert lock.exists()
    assert _state(config) == stream["twin"]  # the first finished undisturbed


def _holder_recorded(config: Path, pid: int) -> bool:
    import sqlalchemy as sa

    from evergreen.metadata import writer_locks_table

    with Project(config_mod.load(config)) as project:
        with project.store.engine.connect() as conn:
            row = conn.execute(
                sa.select(writer_locks_table.c.pid).where(writer_locks_table.c.role == "writer")
            ).first()
    return row is not None and row.pid == pid
