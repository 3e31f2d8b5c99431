"""Benchmark: the CPU seconds of one evaluation on a kept pipeline, cold and warm (issue 13).

Evaluates the latest trained candidate against the registry champion's Model artifact on the
latest span (exactly what the loop's ``evaluate`` stage runs, outside the runner: nothing is
recorded) twice in one process: the first call pays for loading both SavedModels, the second
is what a warm ``evergreen watch`` pays for the models it already loaded. Run it with
``PYTHONPATH`` pointing at the code to measure, alternating two trees to compare them::

    python bench/bench_scaling.py --sizes 16 --base 3000 --keep --workdir /tmp/bs
    PYTHONPATH=src python bench/bench_evaluate_cost.py /tmp/bs/h16

It prints CPU seconds (user + system, all threads: what other processes' load inflates least).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"


class _Context:
    """The little of an ExecutionContext the evaluator uses; outputs go to a temporary folder."""

    def __init__(self, declared: Any) -> None:
        self.declared, self.folder = declared, Path(tempfile.mkdtemp(prefix="bench-evaluate-"))

    def output(self, name: str, type: str, *, span: int | None = None) -> Any:
        from evergreen.artifacts import ArtifactWriter

        return ArtifactWriter(self.folder / name)

    def set_properties(self, name: str, properties: dict[str, Any]) -> None:
        pass


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    from evergreen import config as config_mod
    from evergreen.components.evaluate import EvaluateCandidate, EvaluateInputs
    from evergreen.loop import champion_saved_model
    from evergreen.project import Project
    from evergreen.tf import tensorflow

    tensorflow()
    cfg = config_mod.load(Path(sys.argv[1]) / "evergreen.toml")
    with Project(cfg) as project:
        store = project.store
        manifest = json.loads((champion_saved_model(project) / "evergreen.json").read_text())
        champion = store.artifact(int(manifest["lineage"]["candidate"]))
        candidate = [m for m in store.artifacts(type="Model") if m.id != champion.id][-1]
        spans = {r.span: store.artifact(r.examples_id) for r in store.spans()}
        evaluator = EvaluateCandidate(cfg.train, max(spans), cfg.evaluate)
        print(f"code: {sys.modules['evergreen'].__file__}; load average {os.getloadavg()[0]:.2f}")
        for attempt in ("cold", "warm"):
            started = cpu_seconds()
            evaluator.execute(_Context(EvaluateInputs(candidate, spans, champion)))  # type: ignore[arg-type]
            print(f"evaluate ({attempt}): {cpu_seconds() - started:.2f} s CPU", flush=True)


if __name__ == "__main__":
    main()
