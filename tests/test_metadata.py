"""The lineage store behaves the same on SQLite and on the machine's real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from evergreen import config as config_mod
from evergreen.metadata import MetadataStore
from evergreen.pipeline import ExecutionContext, Runner
from evergreen.project import Project


class WriteText:
    """A tiny component: writes its parameter into a file; counts how often it really ran."""

    name: ClassVar[str] = "write-text"
    version: ClassVar[str] = "1"
    executions = 0

    def __init__(self, text: str, fail: bool = False) -> None:
        self.text = text
        self.fail = fail

    def parameters(self) -> dict[str, Any]:
        return {"text": self.text}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        WriteText.executions += 1
        writer = ctx.output("out", "Text")
        (writer.path / "text.txt").write_text(self.text)
        # A row written in the run's transaction: it must land (or not) with the run.
        ctx.store.register_artifact(
            ctx.conn, type="Note", uri="-", fingerprint="-", properties={"text": self.text}
        )
        if self.fail:
            raise RuntimeError("boom")
        return {"chars": len(self.text)}

    def registered(self, ctx: ExecutionContext, outputs: Any) -> None:
        pass


def test_runs_artifacts_edges_and_cache(metadata_url: str, tmp_path: Path) -> None:
    store = MetadataStore(metadata_url, "p1")
    runner = Runner(store, tmp_path / "artifacts")
    WriteText.executions = 0
    first = runner.run(WriteText("hello"))
    assert not first.cached and first.summary == {"chars": 5}
    out = first.outputs["out"]
    assert Path(out.uri, "text.txt").read_text() == "hello" and len(out.fingerprint) == 64

    again = runner.run(WriteText("hello"))
    assert again.cached and again.run_id == first.run_id and WriteText.executions == 1
    assert again.outputs["out"].id == out.id

    downstream = runner.run(WriteText("world"), {"source": out})
    assert store.run_inputs(downstream.run_id)["source"].id == out.id
    assert store.producer(out.id).id == first.run_id
    assert [r.id for r in store.consumers(out.id)] == [downstream.run_id]
    assert (
        store.run(first.run_id).status == "succeeded"
        and store.run(first.run_id).seconds is not None
    )
    assert store.artifacts(type="Note")[0].properties == {"text": "hello"}

    # Another pipeline in the same database sees none of it.
    other = MetadataStore(metadata_url, "p2")
    assert other.artifacts() == [] and other.runs() == [] and other.spans() == []
    other.close()
    store.close()


def test_failed_run_leaves_no_artifact_no_note(metadata_url: str, tmp_path: Path) -> None:
    store = MetadataStore(metadata_url, "p1")
    runner = Runner(store, tmp_path / "artifacts")
    with pytest.raises(RuntimeError, match="boom"):
        runner.run(WriteText("broken", fail=True))
    assert store.artifacts() == []  # the output and the note rolled back with the run
    [run] = store.runs()
    assert run.status == "failed" and "boom" in run.error
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "artifacts").rglob("*"))
    assert not list((tmp_path / "artifacts").rglob("text.txt"))
    # After the failure, the same work runs again for real (no false cache hit).
    assert not runner.run(WriteText("broken")).cached
    store.close()


def test_full_ingest_on_each_engine(metadata_url: str, fine_foods_project: dict) -> None:
    cfg = config_mod.load(fine_foods_project["config"], metadata_url=metadata_url)
    with Project(cfg) as project:
        outcomes = project.ingest()
        assert [o.status for o in outcomes] == ["validated"] * 5
        assert project.store.url.startswith(metadata_url.split(":")[0])
        status = project.status()
        assert status["totals"]["spans"] == 5 and status["totals"]["label_conflicts"] >= 1
        lineage = project.lineage(status["spans"][4]["statistics"])
        assert lineage["upstream"]["run"]["component"] == "statistics"
        assert lineage["upstream"]["inputs"]["examples"]["upstream"]["run"]["component"] == "ingest"
        assert [r["component"] for r in lineage["consumers"]] == ["validate", "drift"]
        assert all(o.status == "unchanged" for o in project.ingest())


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    from evergreen.errors import MetadataError

    with pytest.raises(MetadataError, match="cannot open the metadata store"):
        MetadataStore("postgresql://postgres@127.0.0.1:1/nowhere", "p")


def test_decision_log_keeps_the_latest_record_per_span(metadata_url: str) -> None:
    from evergreen.decision_log import DecisionLog

    store = MetadataStore(metadata_url, "p1")
    log = DecisionLog(store)
    assert log.latest(1) is None and log.all_latest() == {}
    first = log.save({"span": 1, "mode": "full", "seconds": {"train": 1.5}, "version": 1})
    assert first == {"span": 1, "mode": "full", "seconds": {"train": 1.5}, "version": 1}
    log.save({"span": 2, "mode": "block", "version": None, "path": Path("x")})
    log.save({"span": 1, "mode": "incremental", "version": 2})
    assert log.latest(1) == {"span": 1, "mode": "incremental", "version": 2}
    assert log.latest(2) == {"span": 2, "mode": "block", "version": None, "path": "x"}
    assert [r["mode"] for r in log.all_latest().values()] == ["incremental", "block"]
    other = MetadataStore(metadata_url, "p2")
    assert DecisionLog(other).all_latest() == {}
    other.close()
    store.close()
