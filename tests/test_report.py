"""The HTML report: written by `run` and `report`, opened in headless Chromium with no errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.project import Project
from evergreen.report import load_record, write_report
from tests.test_drift import write_request_log

pytestmark = pytest.mark.slow  # the report test runs the real training loop (about 15 s)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored; CI may keep it
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

TINY_TRAIN = """
[train]
epochs = 2
incremental_epochs = 1
max_tokens = 2000
sequence_length = 40
batch_size = 32
replay_rows = 200
holdout_rows = 200
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two days of the demo's support tickets (300 then 150 rows) through `evergreen run`."""
    from evergreen import demo

    folder = tmp_path_factory.mktemp("report") / "tickets"
    folder.mkdir()
    demo.write_stream(folder, 2, day0_rows=300, daily_rows=150)
    (folder / "evergreen.toml").write_text(demo.CONFIG + TINY_TRAIN, encoding="utf-8")
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "evergreen", "run", "-c", str(folder / "evergreen.toml")],
        env=dict(ENV, COLUMNS="250"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    paths = [
        Path(line.split("report: ", 1)[1])
        for line in run.stdout.splitlines()
        if line.startswith("report: ")
    ]
    config = config_mod.load(folder / "evergreen.toml")
    with Project(config) as project:
        records = [load_record(project, span) for span in (1, 2)]
        texts = [r["text"] for r in demo.generate_day(1, 80, seed=7)]
        write_request_log(config.root, config.name, "2026-11-25", [{"text": t} for t in texts])
        skew_report = write_report(project, 2, records[1], folder / "with-skew.html")
    print(f"evergreen run (2 spans) + reports: {time.perf_counter() - started:.1f} s")
    return {
        "folder": folder,
        "config": folder / "evergreen.toml",
        "records": records,
        "paths": paths,
        "skew": skew_report,
    }


def test_run_records_and_reports_are_written(trained: dict) -> None:
    records, paths = trained["records"], trained["paths"]
    assert [r["mode"] for r in records] == ["full", "incremental"]
    assert paths == [record_path_html(trained, span) for span in (1, 2)]
    for record, path in zip(records, paths, strict=True):
        assert path.name == f"span-{record['span']}.html"
        saved = json.loads(path.with_suffix(".json").read_text())
        assert saved["mode"] == record["mode"] and saved["seconds"] == record["seconds"]
        html = path.read_text(encoding="utf-8")
        assert (
            "<script" not in html
            and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
            and "https://" not in html
        )
        assert 'id="decision"' in html and f'data-mode="{record["mode"]}"' in html
        assert html.count("<svg") >= (2 if record["span"] == 1 else 5)  # span 1 has no reference
    two = paths[1].read_text(encoding="utf-8")
    assert "incremental update" in two and "tokens computed" in two
    assert "seconds per stage" in two and "Candidate vs champion" in two
    assert 'data-feature="text"' in two and 'data-feature="intent"' in two


def test_report_and_status_commands(trained: dict, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evergreen",
            "report",
            "2",
            "-c",
            str(trained["config"]),
            "-o",
            str(out),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout and 'data-mode="incremental"' in out.read_text()
    missing = subprocess.run(
        [sys.executable, "-m", "evergreen", "report", "9", "-c", str(trained["config"])],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "span 9 has not been ingested" in missing.stderr
    status = subprocess.run(
        [sys.executable, "-m", "evergreen", "status", "-c", str(trained["config"])],
        env=dict(ENV, COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "latest drift (span 2)" in status.stdout
    assert "latest decision (span 2): incremental" in status.stdout
    assert "serving skew" in status.stdout


def test_decisions_are_read_from_the_metadata_store(trained: dict, tmp_path: Path) -> None:
    """The JSON records are for people: status and the report read the store's copy."""
    from evergreen.report import record_path, report_for

    with Project(config_mod.load(trained["config"])) as project:
        files = [record_path(project, span) for span in (1, 2)]
        assert [json.loads(f.read_text()) for f in files] == trained["records"]
        aside = [f.rename(f.with_suffix(".aside")) for f in files]
        try:
            decisions = [s["decision"] for s in project.status()["spans"]]
            html = report_for(project, 2, tmp_path / "span-2.html").read_text(encoding="utf-8")
        finally:
            for moved, f in zip(aside, files, strict=True):
                moved.rename(f)
    assert [d["mode"] for d in decisions] == ["full", "incremental"]
    assert decisions[1]["report"] == str(files[1].with_suffix(".html"))
    assert 'data-mode="incremental"' in html and "tokens computed" in html


def record_path_html(trained: dict, span: int) -> Path:
    return trained["folder"] / ".evergreen" / "reports" / f"span-{span}.html"


def _browser_or_skip() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(
            f"{CHROMIUM} is missing in CI: `make test` installs the Debian chromium package"
        )
    pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium; `make test` tries apt-get)")


def _view(browser: object, path: Path) -> dict:
    """Open ``path`` in a new page: console errors, requests, charts, decision, a screenshot."""
    errors: list[str] = []
    requests: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    shot = ARTIFACTS / f"report-{path.stem}.png"
    page.screenshot(path=str(shot), full_page=True)
    seen = {
        "errors": errors,
        "requests": requests,
        "charts": page.locator("svg.chart").count(),
        "drawn": page.locator("svg.chart rect").count(),
        "decision": page.locator("#decision + .decision").inner_text(),
        "screenshot": shot,
    }
    page.close()
    print(f"screenshot: {shot}")
    return seen


def test_report_opens_in_headless_chromium_without_errors(trained: dict) -> None:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            views = {path: _view(browser, path) for path in [*trained["paths"], trained["skew"]]}
        finally:
            browser.close()
    for path, seen in views.items():
        assert seen["errors"] == [], path
        assert seen["requests"] == [path.as_uri()]  # nothing fetched beyond the file itself
        assert seen["charts"] >= (2 if path.stem == "span-1" else 5) and seen["drawn"] > 10
        assert seen["decision"].split()[0] in ("full", "incremental")
        assert seen["screenshot"].stat().st_size > 10_000
    html = trained["skew"].read_text(encoding="utf-8")
    assert "80 sampled requests" in html and 'id="skew"' in html


def test_a_span_ingested_after_training_gets_the_unknown_rate_and_a_preview(
    trained: dict, tmp_path: Path
) -> None:
    """Runs last: it adds span 3 to the shared project."""
    import csv

    from evergreen import demo
    from evergreen.components.drift import find_report

    folder = trained["folder"] / "data" / "span-3"
    folder.mkdir()
    with open(folder / "tickets.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["ticket_id", "channel", "text", "intent"])
        writer.writeheader()
        writer.writerows(demo.generate_day(2, 150))
    with Project(config_mod.load(trained["config"])) as project:
        [outcome] = [o for o in project.ingest() if o.span == 3]
        drift = find_report(project.store, 3)
        path = write_report(project, 3, None, tmp_path / "span-3.html")
        status = project.status()
    assert outcome.status == "validated"
    assert drift.unknown_rate is not None and 0.0 < drift.unknown_rate < 0.3
    text = drift.comparison("window").feature("text")
    assert text.score("unknown_rate") == pytest.approx(drift.unknown_rate, abs=1e-5)
    html = path.read_text(encoding="utf-8")
    assert "not trained yet: what the policy would decide" in html
    assert "unknown-token rate under the champion" in html
    assert status["latest_drift"]["span"] == 3 and "decision" not in status["spans"][2]
