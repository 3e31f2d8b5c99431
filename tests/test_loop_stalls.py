"""No silent stall: a blocked span stops `run` loudly; `run --full` with nothing new says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.loop import TrainingLoop
from evergreen.project import Project
from evergreen.registry import Registry
from tests.conftest import dataset, read_csv, write_config, write_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
# One record per span: the quality debt's challenger (a second training) is off.
EXTRA = '[train]\nepochs = 2\nfull_after_growth = 0\n\n[drift]\nfull_retrain_on = "never"\n'


def _evergreen(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evergreen", *args, "-c", str(config)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_span_blocked_by_validation_stops_run_and_names_the_fix(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-1" / "reviews.csv", header, rows[:300])
    # Span 2 lost its product column (a blocking anomaly); span 3 is fine but must wait.
    write_csv(
        tmp_path / "data" / "span-2" / "reviews.csv",
        header[1:],
        [r[1:] for r in rows[300:450]],
    )
    write_csv(tmp_path / "data" / "span-3" / "reviews.csv", header, rows[450:600])
    config = write_config(tmp_path, label="score", extra=EXTRA)

    run = _evergreen(config, "run", "--json")
    assert run.returncode == 1, run.stderr
    records = json.loads(run.stdout)
    assert [(r["span"], r["mode"]) for r in records] == [(1, "full"), (2, "block")]
    assert "blocked by validation" in records[1]["reason"] and "product" in records[1]["reason"]
    assert f"evergreen ingest -c {config} --accept 2" in run.stderr
    assert "Traceback" not in run.stderr

    again = _evergreen(config, "run")  # still blocked: still loud, never "nothing new"
    assert again.returncode == 1 and "span 2 was not trained" in again.stderr

    accepted = _evergreen(config, "ingest", "--accept", "2")
    assert accepted.returncode == 0, accepted.stderr
    resumed = _evergreen(config, "run", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["span"] for r in json.loads(resumed.stdout)] == [2, 3]  # in order, none skipped


@pytest.mark.slow
def test_run_full_with_nothing_new_says_so(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-1" / "reviews.csv", header, rows[:300])
    config = write_config(
        tmp_path, label="score", features={"product": "categorical", "review": "text"}, extra=EXTRA
    )
    first = _evergreen(config, "run", "--full", "--json")
    assert first.returncode == 0, first.stderr
    again = _evergreen(config, "run", "--full", "--json")
    assert again.returncode == 0, again.stderr
    [record] = json.loads(again.stdout)
    assert record["version"] == 1 and not record["blessed"]
    assert record["verdict"][0].startswith("nothing new: the champion (version 1)")
    cfg = config_mod.load(config)
    assert [v.version for v in Registry(cfg.registry_dir).versions(cfg.name)] == [1]
    with Project(cfg) as project:
        assert TrainingLoop(project).run() == []  # and a plain run has nothing to do either
