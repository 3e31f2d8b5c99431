"""The chief's session of a multi-worker launch: heartbeats, posted jobs, the end marker.

Below both :mod:`evergreen.training.worker` (which serves the jobs) and
:mod:`evergreen.training.multi_worker` (whose chief posts them), so neither imports the other
back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evergreen.errors import ConfigError
from evergreen.training.data import TrainInputs
from evergreen.training.strategy import TaskInfo

HEARTBEAT_SECONDS = 5.0


@dataclass
class Session:
    """A launch of all workers: its folder, this worker's task, jobs posted or taken so far."""

    folder: Path
    info: TaskInfo
    jobs: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)


_session: Session | None = None  # the chief's, while its loop runs


@contextlib.contextmanager
def chief(session: Session) -> Iterator[Session]:
    """The chief's side: heartbeats while the loop runs, ``end.json`` however it ends."""
    global _session
    session.folder.mkdir(parents=True, exist_ok=True)
    beat = threading.Thread(target=_heartbeat, args=(session,), daemon=True)
    beat.start()
    _session, ok = session, False
    try:
        yield session
        ok = True
    finally:
        _session = None
        session._stop.set()
        _write_json(session.folder / "end.json", {"ok": ok, "jobs": session.jobs})


def _heartbeat(session: Session) -> None:
    alive = session.folder / "chief.alive"
    while not session._stop.is_set():
        alive.write_text(str(time.time()), encoding="utf-8")
        session._stop.wait(HEARTBEAT_SECONDS)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a file


def post_job(component: Any, inputs: TrainInputs, checkpoint_dir: Path, info: TaskInfo) -> None:
    """Tell the other workers what to train (nothing to tell when training alone).

    Raises:
        ConfigError: TF_CONFIG names several workers but this process is not
            ``evergreen train-worker`` (the others would never learn of the job).
    """
    if info.workers == 1:
        return
    if _session is None:
        raise ConfigError(
            f"TF_CONFIG names {info.workers} workers: start every worker with "
            "`evergreen train-worker -c CONFIG` (worker 0 runs the loop), not `evergreen run`"
        )
    _session.jobs += 1
    job = {
        "mode": component.mode,
        "reason": component.reason,
        "new_span": component.new_span,
        "train": asdict(component.cfg),
        "inputs": inputs.to_json(),
        "checkpoint_dir": str(checkpoint_dir),
    }
    _write_json(_session.folder / f"job-{_session.jobs}.json", job)
