"""The command line: init, the two error tiers, exit codes, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from evergreen import config as config_mod

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def evergreen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evergreen", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    result = evergreen("init", "reviews", "--template", "text", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = config_mod.load(tmp_path / "reviews" / "evergreen.toml")
    assert cfg.name == "reviews" and cfg.data.features == {"text": "text"}
    again = evergreen("init", "reviews", cwd=tmp_path)
    assert (
        again.returncode == 1
        and "already exists" in again.stderr
        and "Traceback" not in again.stderr
    )
    tabular = evergreen("init", "churn", "--template", "tabular", cwd=tmp_path)
    assert (
        tabular.returncode == 0
        and config_mod.load(tmp_path / "churn" / "evergreen.toml").data.label == "churn"
    )


def test_known_error_is_one_line_exit_1(tmp_path: Path) -> None:
    result = evergreen("status", "-c", "missing.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "config error: config file missing.toml does not exist; create one with `evergreen init NAME`"
    ]


def test_usage_error_exits_2_with_suggestion(tmp_path: Path) -> None:
    result = evergreen("ingst", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "No such command 'ingst'" in result.stderr and "Did you mean" in result.stderr


def test_debug_reraises_with_traceback(tmp_path: Path) -> None:
    result = evergreen("--debug", "status", "-c", "missing.toml", cwd=tmp_path)
    assert (
        result.returncode == 1 and "Traceback" in result.stderr and "ConfigError" in result.stderr
    )


def test_no_files_and_bad_ids_are_clear(tmp_path: Path) -> None:
    evergreen("init", "empty", cwd=tmp_path)
    config = str(tmp_path / "empty" / "evergreen.toml")
    result = evergreen("ingest", "-c", config, cwd=tmp_path)
    assert result.returncode == 1 and "no files match data.pattern" in result.stderr
    result = evergreen("lineage", "-c", config, "a999", cwd=tmp_path)
    assert result.returncode == 1 and "artifact a999 does not exist" in result.stderr


def test_demo_runs_and_status_json_reads_it(tmp_path: Path) -> None:
    result = evergreen("demo", "stream", "--days", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "span 1: full (no champion yet)" in result.stdout
    assert "span 3: incremental" in result.stdout
    assert "version 1 (day 0 only) -> champion" in result.stdout
    status = json.loads(
        evergreen("status", "-c", "stream/evergreen.toml", "--json", cwd=tmp_path).stdout
    )
    assert [s["status"] for s in status["spans"]] == ["validated"] * 3
    assert all(s["quarantined"].get("unparseable") == 1 for s in status["spans"][1:])
    assert status["totals"]["duplicates"] > 0
    # A full retrain on all three days: one more version (the increments publish theirs too)
    # to roll back from.
    full = evergreen("run", "-c", "stream/evergreen.toml", "--full", "--json", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    history = json.loads(
        evergreen("history", "-c", "stream/evergreen.toml", "--json", cwd=tmp_path).stdout
    )
    assert history[0]["version"] == 1 and history[0]["mode"] == "full"
    # Every published version carries TF Serving's warm-up requests, from the eval rows.
    from evergreen import warmup

    first = tmp_path / "stream" / ".evergreen" / "registry" / "support-tickets" / "1"
    requests = warmup.read_warmup_requests(first)
    assert len(requests) == warmup.MAX_ROWS + 1
    assert requests[0].model_spec.name == "support-tickets"
    assert all(t for r in requests for t in warmup.request_arrays(r)["text"])
    assert sum(v["champion"] for v in history) == 1
    text = "I want a refund for the broken drone"
    predicted = evergreen("predict", "-c", "stream/evergreen.toml", "--json", text, cwd=tmp_path)
    assert json.loads(predicted.stdout)["predictions"][0]["label"] == "refund"
    assert len(history) > 1, history
    back = evergreen("rollback", "-c", "stream/evergreen.toml", "1", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert "champion is now version 1" in back.stdout
