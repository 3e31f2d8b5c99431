"""``kill -9`` in the middle of training, then a re-run: it resumes, nothing is lost, no duplicate version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.project import Project
from evergreen.registry import Registry
from tests.conftest import dataset, read_csv, write_config, write_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
RECORD_KEYS = {
    "span",
    "mode",
    "reason",
    "rows_new",
    "rows_total",
    "tokens_computed",
    "tokens_reused",
    "seconds",
    "metrics",
    "blessed",
    "version",
}


def _backups(artifacts: Path) -> list[Path]:
    return list((artifacts / "train").glob("span-*/*/_backup/training_metadata.json"))


@pytest.mark.slow
def test_kill_during_training_then_rerun_resumes(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-1" / "reviews.csv", header, rows[:4000])
    config = write_config(
        tmp_path,
        label="score",
        features={"product": "categorical", "review": "text"},
        extra="[train]\nepochs = 6\n",
    )
    cfg = config_mod.load(config)
    command = [sys.executable, "-m", "evergreen", "run", "-c", str(config), "--json"]

    victim = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not _backups(cfg.artifacts_dir):  # the first epoch has finished and been backed up
        assert victim.poll() is None, (
            f"run ended before it could be killed: {victim.stderr.read().decode()}"
        )
        assert time.monotonic() < deadline, "training never backed up an epoch"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL

    registry = Registry(cfg.registry_dir)
    with Project(cfg) as project:
        assert project.store.artifacts(type="Model") == []  # no half-trained candidate is visible
        [examples] = project.store.artifacts(type="Examples")  # the ingested span is kept
    assert registry.versions(cfg.name) == []

    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    [record] = json.loads(rerun.stdout)
    assert RECORD_KEYS <= set(record)
    assert (record["span"], record["mode"], record["blessed"], record["version"]) == (
        1,
        "full",
        True,
        1,
    )
    assert record["rows_new"] == record["rows_total"]

    with Project(cfg) as project:
        # Featurizing finished before the kill; the re-run reuses it instead of tokenizing
        # again: one featurize run in all. The record's ledger is the version's cost, whichever
        # process did the work, so it equals that run's plus the vocabulary fit's.
        [featurized] = [r for r in project.store.runs() if r.component == "featurize"]
        [fit] = [r for r in project.store.runs() if r.component == "fit-featurizer"]
        assert featurized.status == "succeeded" and featurized.summary["tokens_computed"] > 0
        assert fit.status == "succeeded" and fit.summary["tokens_computed"] > 0
        assert record["tokens_computed"] == (
            featurized.summary["tokens_computed"] + fit.summary["tokens_computed"]
        )
        runs = [r for r in project.store.runs() if r.component == "train"]
        assert sorted(r.status for r in runs) == ["abandoned", "succeeded"]
        [succeeded] = [r for r in runs if r.status == "succeeded"]
        assert succeeded.summary["resumed_from_epoch"] >= 1  # later epochs only, not from scratch
        assert project.store.artifacts(type="Examples") == [examples]  # nothing re-ingested
        [model] = project.store.artifacts(type="Model")
    assert not list(cfg.artifacts_dir.rglob("_backup")) and not list(
        cfg.artifacts_dir.rglob(".tmp-*")
    )
    assert [v.version for v in registry.versions(cfg.name)] == [1]
    assert registry.get(cfg.name, 1).manifest["lineage"]["candidate"] == model.id

    again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert (
        again.returncode == 0 and json.loads(again.stdout) == []
    )  # nothing new: no duplicate version
    assert [v.version for v in registry.versions(cfg.name)] == [1]
