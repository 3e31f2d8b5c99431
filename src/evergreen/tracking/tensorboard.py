"""TensorBoard logs: one folder per model under the root, one continuous step across versions.

``<root>/tensorboard/<name>/`` holds every run's scalars, so ``tensorboard --logdir
<root>/tensorboard`` shows one line per model across all of its versions. The step counts
training epochs over the model's whole history: each run's epoch losses take the next steps,
and its per-version scalars (metrics, drift, cost, seconds) sit at its last step. The offset
lives in ``steps.json`` beside the event files.

Scalars are written as ``simple_value`` summaries (what ``tf.summary.scalar`` writes in TF1
style), because TensorBoard's ``EventAccumulator.Scalars()`` and every TensorBoard UI read them,
while TF2's tensor-typed summaries are invisible to ``Scalars()``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from evergreen.tf import tensorflow
from evergreen.tracking.scalars import drift_scores, record_scalars

STEPS_FILE = "steps.json"


def log_dir(root: Path, name: str) -> Path:
    """Where a model's TensorBoard events live."""
    return Path(root) / "tensorboard" / name


def write_record(project: Any, record: Mapping[str, Any]) -> int | None:
    """Write one loop record's scalars; returns the step of its per-version scalars.

    A record already written (same span, mode and version) is skipped, so a resumed run does
    not log twice. Returns None when nothing was written.
    """
    cfg = project.config
    folder = log_dir(cfg.root, cfg.name)
    folder.mkdir(parents=True, exist_ok=True)
    state = _read_state(folder / STEPS_FILE)
    key = f"span-{record['span']}:{record['mode']}:{record.get('version')}"
    if key in state["logged"]:
        return None
    epochs = record.get("epoch_losses") or {}
    first = state["next_step"]
    steps: list[tuple[int, dict[str, float]]] = []
    for i, (loss, val_loss) in enumerate(_epoch_pairs(epochs)):
        values = {"train/loss": loss}
        if val_loss is not None:
            values["train/val_loss"] = val_loss
        steps.append((first + i, values))
    last = first + max(len(steps) - 1, 0)
    scalars = {**record_scalars(record), **drift_scores(project.store, record["span"])}
    steps.append((last, scalars))
    _write(folder, steps)
    state["next_step"] = last + 1
    state["logged"].append(key)
    _write_state(folder / STEPS_FILE, state)
    return last


def _epoch_pairs(epochs: Mapping[str, list[float]]) -> Iterator[tuple[float, float | None]]:
    losses = list(epochs.get("loss") or [])
    val = list(epochs.get("val_loss") or [])
    for i, loss in enumerate(losses):
        yield float(loss), (float(val[i]) if i < len(val) else None)


def _write(folder: Path, steps: list[tuple[int, dict[str, float]]]) -> None:
    tf = tensorflow()
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step, values in steps:
            summary = tf.compat.v1.Summary(
                value=[
                    tf.compat.v1.Summary.Value(tag=tag, simple_value=value)
                    for tag, value in values.items()
                ]
            )
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
    writer.flush()
    writer.close()


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"next_step": 0, "logged": []}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"next_step": int(data.get("next_step", 0)), "logged": list(data.get("logged", []))}


def _write_state(path: Path, state: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
