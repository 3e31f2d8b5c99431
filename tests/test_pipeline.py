"""The runner's component seam: typed inputs become named links; user-caused TF errors map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from evergreen.errors import ConfigError, DataError
from evergreen.metadata import Artifact, MetadataStore
from evergreen.pipeline import ExecutionContext, Inputs, Runner, per_span


@dataclass(frozen=True)
class _SpansIn(Inputs):
    first: Artifact
    spans: dict[int, Artifact] = per_span("span")
    optional: Artifact | None = None


class _Echo:
    """Writes one artifact; records which typed inputs it was given."""

    name: ClassVar[str] = "echo"
    version: ClassVar[str] = "1"

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def parameters(self) -> dict[str, Any]:
        return {"tag": self.tag}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        writer = ctx.output("out", "Thing", span=1)
        writer.write_json("thing.json", {"tag": self.tag})
        declared = ctx.declared
        spans = sorted(declared.spans) if isinstance(declared, _SpansIn) else []
        return {"spans": spans}


class _Failing:
    """A component whose training fails the way TensorFlow does (injected)."""

    name: ClassVar[str] = "failing"
    version: ClassVar[str] = "1"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def parameters(self) -> dict[str, Any]:
        return {"error": type(self.error).__name__}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        raise self.error


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    store = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}", "p")
    return Runner(store, tmp_path / "artifacts")


def test_typed_inputs_are_linked_by_name_and_read_back_typed(runner: Runner) -> None:
    a = runner.run(_Echo("a")).outputs["out"]
    b = runner.run(_Echo("b")).outputs["out"]
    c = runner.run(_Echo("c")).outputs["out"]
    result = runner.run(_Echo("d"), _SpansIn(a, {2: b, 10: c}), span=1)
    assert result.summary == {"spans": [2, 10]}
    links = runner.store.run_inputs(result.run_id)
    assert {name: art.id for name, art in links.items()} == {
        "first": a.id,
        "span-2": b.id,
        "span-10": c.id,
    }
    # The same inputs given by link name are the same run (same cache key).
    again = runner.run(_Echo("d"), {"first": a, "span-2": b, "span-10": c}, span=1)
    assert again.cached and again.run_id == result.run_id


def _tf_error(name: str) -> BaseException:
    from evergreen.tf import tensorflow

    error_class = getattr(tensorflow().errors, name)
    return error_class(None, None, "OOM when allocating tensor with shape[4096,300]\nmore")


@pytest.mark.parametrize(
    ("name", "expected", "advice"),
    [
        ("ResourceExhaustedError", ConfigError, "lower train.batch_size"),
        ("InvalidArgumentError", DataError, "TensorFlow rejected its inputs"),
    ],
    ids=["out-of-memory", "invalid-argument"],
)
def test_user_caused_tensorflow_errors_become_evergreen_errors(
    runner: Runner, name: str, expected: type[Exception], advice: str
) -> None:
    with pytest.raises(expected) as raised:
        runner.run(_Failing(_tf_error(name)))
    message = str(raised.value)
    assert message.startswith("failing: ") and advice in message
    assert "OOM when allocating" in message and "more" not in message  # first line only
    [run] = runner.store.runs(component="failing")
    assert run.status == "failed" and name in (run.error or "")


def test_other_errors_pass_through_unchanged(runner: Runner) -> None:
    with pytest.raises(ZeroDivisionError):
        runner.run(_Failing(ZeroDivisionError("a bug")))
