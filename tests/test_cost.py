"""An update's fixed costs (issue 13): what the CLI imports, and the sequence length from data.

One small fine-foods pipeline (300 rows, then 60) is trained by real ``evergreen run``
subprocesses; the tests then look at what each command imported (``python -X importtime``
lists every module a process imports), at the frozen featurizer's sequence length, and at the
run records.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen import examples as examples_mod
from evergreen.components import statistics as stats_mod
from evergreen.config import ConfigError
from evergreen.project import Project
from evergreen.sequence_length import from_statistics
from tests.conftest import dataset, float_differences, read_csv, write_config, write_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
HEAVY = ("tensorflow", "keras", "sklearn")


def evergreen(*args: str, cwd: Path, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-m", "evergreen", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def imported(stderr: str) -> set[str]:
    """Top-level packages a ``-X importtime`` run imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A text pipeline after a full run on span 1 and an incremental run on span 2."""
    folder = tmp_path_factory.mktemp("cost")
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(folder / "data" / "span-1" / "reviews.csv", header, rows[:300])
    config = write_config(
        folder,
        label="score",
        features={"review": "text"},
        # 60 rows read as drift by sampling noise alone; the increment is what is tested here
        extra='[train]\nsequence_length = 1000\nepochs = 1\nincremental_epochs = 1\n[drift]\nfull_retrain_on = "never"\n',
    )
    records = []
    for span, part in ((1, None), (2, rows[300:360])):
        if part is not None:
            write_csv(folder / "data" / f"span-{span}" / "reviews.csv", header, part)
        done = evergreen("run", "-c", str(config), "--json", cwd=folder)
        assert done.returncode == 0, done.stderr
        records += json.loads(done.stdout)
    return config, records


@pytest.mark.parametrize(
    "command", [["--help"], ["status"], ["history"], ["lineage", "a1"], ["status", "--json"]]
)
def test_read_only_commands_do_not_import_tensorflow(
    pipeline: tuple[Path, list[dict]], command: list[str]
) -> None:
    config, _ = pipeline
    args = command if command == ["--help"] else [command[0], "-c", str(config), *command[1:]]
    done = evergreen(*args, cwd=config.parent, importtime=True)
    assert done.returncode == 0, done.stderr
    names = imported(done.stderr)
    assert "evergreen" in names and "click" in names  # the listing is real
    assert not names & set(HEAVY), f"`evergreen {' '.join(command)}` imported {names & set(HEAVY)}"


def test_run_imports_tensorflow_without_sklearn_and_books_it(
    pipeline: tuple[Path, list[dict]],
) -> None:
    config, records = pipeline
    assert [r["mode"] for r in records] == ["full", "incremental"]
    for record in records:  # each run was a fresh process: it paid the import, booked apart
        assert record["seconds"]["import_tensorflow"] > 0
    done = evergreen("run", "-c", str(config), cwd=config.parent, importtime=True)
    assert done.returncode == 0, done.stderr
    names = imported(done.stderr)
    # nothing new to train: the run does not import TensorFlow at all
    assert not names & set(HEAVY), names & set(HEAVY)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from evergreen.tf import tensorflow; tensorflow(); import keras; "
            "print(sorted(m for m in ('sklearn', 'keras', 'tensorflow') if sys.modules.get(m)))",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.stdout.split("\n")[-2] == "['keras', 'tensorflow']", probe.stderr


def test_sequence_length_comes_from_the_data_and_increments_reuse_it(
    pipeline: tuple[Path, list[dict]],
) -> None:
    config, records = pipeline
    with Project(config_mod.load(config)) as project:
        models = project.store.artifacts(type="Model")
        assert [m.properties["mode"] for m in models] == ["full", "incremental"]
        full, increment = (project.store.artifact(int(m.properties["featurizer"])) for m in models)
        # The increment uses the full run's featurizer, or one grown append-only from it: either
        # way the full run's sequence length.
        assert increment.id == full.id or increment.properties["grown_from"] == full.id
        fitted = full
        length = int(fitted.properties["sequence_length"])
        for featurizer in (full, increment):
            on_disk = json.loads((Path(featurizer.uri) / "featurizer.json").read_text())
            assert on_disk["config"]["sequence_length"] == length
        # the exact token counts of the span the featurizer was fitted on
        span = project.store.spans()[0]
        counts = sorted(
            len(stats_mod.words(row["review"] or ""))
            for row in loop_rows(project, span.examples_id)
        )
    assert length < 1000  # the configured cap; the reviews' 99th percentile is well below it
    assert np.quantile(counts, 0.98) <= length <= max(counts)
    # the featurized shards have exactly that many ids per row
    assert records[0]["tokens_computed"] > 0


def loop_rows(project: Project, examples_id: int) -> list[dict]:
    from evergreen.components.featurize import span_rows

    artifact = project.store.artifact(examples_id)
    return [row for split in ("train", "eval") for row in span_rows(artifact, split)]


def test_from_statistics_quantile_cap_floor_and_off() -> None:
    stats = stats_mod.SpanStatistics({"text": "text"})
    texts = [" ".join(["word"] * n) for n in range(1, 101)]  # 1 … 100 tokens
    stats.add_batch([{"text": t, "y": "a"} for t in texts], "y")
    args = {"maximum": 200, "minimum": 5}
    assert from_statistics([stats], "text", quantile=0.99, **args) == math.ceil(
        stats.columns["text"].word_counts.get_quantile(0.99)
    )
    assert 98 <= from_statistics([stats], "text", quantile=0.99, **args) <= 100
    assert from_statistics([stats], "text", quantile=0.99, maximum=40, minimum=5) == 40
    assert from_statistics([stats], "text", quantile=0.0, **args) == 200  # off: the cap
    short = stats_mod.SpanStatistics({"text": "text"})
    short.add_batch([{"text": "two words", "y": "a"}] * 10, "y")
    assert from_statistics([short], "text", quantile=0.99, **args) == 5  # the Conv1D kernel
    assert from_statistics([], "text", quantile=0.99, **args) == 200  # no statistics


@pytest.mark.parametrize("value", [1.5, -0.1, "high"])
def test_sequence_length_quantile_is_validated(tmp_path: Path, value: object) -> None:
    config = write_config(
        tmp_path,
        label="score",
        extra=f"[train]\nsequence_length_quantile = {json.dumps(value)}\n",
    )
    with pytest.raises(ConfigError, match="train.sequence_length_quantile"):
        config_mod.load(config)


def test_holdout_candidates_are_cached_beside_the_examples_and_choose_the_same_rows(
    pipeline: tuple[Path, list[dict]],
) -> None:
    from evergreen.components import evaluate
    from evergreen.components.featurize import span_rows

    config, _ = pipeline
    with Project(config_mod.load(config)) as project:
        first = project.store.artifact(project.store.spans()[0].examples_id)
        uri = Path(first.uri)
        # the increment's evaluation judged span 1's holdout: its cache was written then
        assert (uri.parent / f"holdout-cache-{uri.name}" / "cap-2000" / "counts.json").is_file()
        # and not inside the examples folder, whose subfolders are its splits
        assert sorted(p.name for p in uri.iterdir() if p.is_dir()) == ["eval", "train"]
        label = first.properties["label"]
        for k in (40, 10, 3):  # span 1 has about 60 eval rows: samples of several sizes
            whole = evaluate.stratified_sample(span_rows(first, "eval"), k, label, "holdout")
            assert evaluate.historic_holdout([first], k) == whole and len(whole) == k


class _Context:
    """The little of an ExecutionContext that the evaluator uses, writing under ``folder``."""

    def __init__(self, declared: object, folder: Path) -> None:
        self.declared, self.folder, self.properties = declared, folder, {}

    def output(self, name: str, type: str, *, span: int | None = None) -> object:
        from evergreen.artifacts import ArtifactWriter

        return ArtifactWriter(self.folder / name)

    def set_properties(self, name: str, properties: dict) -> None:
        self.properties.update(properties)


def test_the_champion_is_scored_only_on_rows_it_was_not_evaluated_on(
    pipeline: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    import shutil

    from evergreen.components.evaluate import EvaluateCandidate, EvaluateInputs
    from evergreen.components.known_scores import KnownScores

    config, _ = pipeline
    with Project(config_mod.load(config)) as project:
        store = project.store
        full, increment = store.artifacts(type="Model")
        spans = {r.span: store.artifact(r.examples_id) for r in store.spans()}
        evaluation = store.artifacts(type="ModelEvaluation")[-1]
        judged = json.loads((Path(evaluation.uri) / "evaluation.json").read_text())
        rows = {name: int(m["rows"]) for name, m in judged["candidate"].items()}
        assert evaluation.properties["candidate"] == increment.id and rows["historic"] > 0
        # The full run's evaluation blessed its candidate and kept its scores (span 1's eval
        # rows): as champion it was scored on span 2's eval rows only, not on the historic
        # holdout nor on the span 1 rows pooled into the "new" set.
        span_2_eval = int(spans[2].properties["splits"]["eval"])
        assert rows["new"] > span_2_eval  # span 1's rows pooled in
        assert evaluation.properties["rows_scored"] == {
            "candidate": sum(rows.values()),
            "champion": span_2_eval,
        }
        evaluator = EvaluateCandidate(project.config.train, 2, project.config.evaluate)
        inputs = EvaluateInputs(increment, spans, full)
        kept, aside = KnownScores(full).folder, tmp_path / "aside"
        with_kept = _Context(inputs, tmp_path / "with")
        again = evaluator.execute(with_kept)  # type: ignore[arg-type]
        shutil.move(kept, aside)
        try:
            without = _Context(inputs, tmp_path / "without")
            fresh = evaluator.execute(without)  # type: ignore[arg-type]
        finally:
            shutil.rmtree(kept, ignore_errors=True)
            shutil.move(aside, kept)
    # now every row is known: the champion scored none; without its kept scores, all of them
    assert with_kept.properties["rows_scored"]["champion"] == 0
    assert without.properties["rows_scored"]["champion"] == sum(rows.values())
    # the same metrics, guards and verdict (kept scores came from other batches: float error)
    assert float_differences(again, fresh, 1e-6) == []
    assert again["blessed"] == judged["blessed"] and again["guards"] == judged["guards"]


EXIT_PROBE = """
import atexit, sys
from evergreen.tf import tensorflow
{load}
class Torn:
    def __del__(self):
        print("torn down", flush=True)
kept = Torn()
atexit.register(lambda: print("atexit ran", flush=True))
sys.argv = ["evergreen", "status", "-c", sys.argv[1]]
from evergreen.cli import entry
entry()
"""


@pytest.mark.parametrize("load", ["tensorflow()", "pass"])
def test_the_process_entry_skips_the_teardown_once_tensorflow_is_loaded(
    tmp_path: Path, load: str
) -> None:
    missing = tmp_path / "missing.toml"
    done = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE.format(load=load), str(missing)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr  # the command's exit code (a config error) kept
    assert "does not exist" in done.stdout + done.stderr
    assert "atexit ran" in done.stdout  # atexit handlers (logging's flush) still run
    # the interpreter's teardown (objects freed one by one) is skipped only with TensorFlow in
    torn = "torn down" in done.stdout
    assert torn == (load == "pass")


def test_kept_scores_of_other_weights_are_ignored(tmp_path: Path) -> None:
    from evergreen.components.known_scores import KnownScores, score_once
    from evergreen.metadata import Artifact

    saved = tmp_path / "model" / "saved_model"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    (saved / "variables" / "variables.index").write_bytes(b"weights 1")
    model = Artifact(1, "Model", str(tmp_path / "model"), 1, 1, "", {})
    rows = [{examples_mod.ROW_HASH: h} for h in ("a", "b")]
    calls: list[int] = []

    def score(part: list[dict]) -> tuple[np.ndarray, list[str]]:
        calls.append(len(part))
        return np.full((len(part), 2), 0.5, dtype=np.float32), ["no", "yes"]

    assert score_once(rows, score, KnownScores(model))[2] == 2
    assert score_once(rows, score, KnownScores(model))[2] == 0  # both known now
    (saved / "variables" / "variables.index").write_bytes(b"weights 2")  # written anew
    scores, labels, scored = score_once(rows, score, KnownScores(model))
    assert scored == 2 and calls == [2, 2] and labels == ["no", "yes"] and scores.shape == (2, 2)
    for part in KnownScores(model).folder.glob("part-*.npz"):
        part.write_bytes(b"not a zip")  # a damaged part is not read, the rows scored again
    assert score_once(rows, score, KnownScores(model))[2] == 2


def test_a_process_loads_a_saved_model_once_while_its_files_are_unchanged(
    pipeline: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    import shutil

    from evergreen.models import saved_model as saved_model_mod

    config, _ = pipeline
    with Project(config_mod.load(config)) as project:
        full, increment = (
            Path(m.uri) / "saved_model" for m in project.store.artifacts(type="Model")
        )
    first = saved_model_mod.serving_function(full)
    assert saved_model_mod.serving_function(full) is first  # kept loaded: not loaded again
    copy = tmp_path / "copy"
    shutil.copytree(full, copy, copy_function=shutil.copy)
    assert saved_model_mod.serving_function(copy) is not first  # another folder
    same_folder = saved_model_mod.serving_function(copy)
    shutil.rmtree(copy)
    shutil.copytree(increment, copy, copy_function=shutil.copy)  # written anew in its place
    assert saved_model_mod.serving_function(copy) is not same_folder
