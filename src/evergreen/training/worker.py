"""``evergreen train-worker``: one process per TF_CONFIG task of a multi-worker training.

Every worker starts the same command with its own ``TF_CONFIG``. Each creates the
``MultiWorkerMirroredStrategy`` first (TensorFlow's rule), then the workers agree on a session
with one collective: the chief draws a random number, the others add zero, all learn it. The
session is the folder ``<root>/distributed/session-<number>/``, so files an earlier, killed
launch left behind are never read as this one's.

- The chief (worker 0) runs the whole loop (``evergreen run``: ingest … push). Each training
  it reaches is posted as ``job-<k>.json`` (the TrainModel's parameters and input artifacts)
  and trained in step with the others; only the chief exports and registers. When the loop
  ends it writes ``end.json``; it touches ``chief.alive`` every few seconds meanwhile.
- The other workers wait for each job, train it (checkpointing to scratch folders), record
  ``job-<k>.worker-<i>.json`` (epochs, optimizer steps, a digest of the final weights, which
  must equal the chief's ``weights_sha256`` in the candidate's properties), and exit 0
  at ``end.json`` (1 when the chief's loop failed, or its heartbeat stopped for
  ``CHIEF_SILENT_SECONDS``).

The project root must be shared storage (NFS, a ReadWriteMany volume, a bucket mount): the
workers read the featurized shards and the chief's checkpoints from it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evergreen.config import Config, TrainConfig
from evergreen.errors import ConfigError, WorkerLost
from evergreen.metadata import Artifact
from evergreen.training.strategy import TaskInfo, multi_worker_strategy, task_info

SESSIONS = "distributed"  # under the project root
HEARTBEAT_SECONDS = 5.0
CHIEF_SILENT_SECONDS = 300.0  # a chief heard from less recently than this is gone
POLL_SECONDS = 0.2


@dataclass
class Session:
    """A launch of all workers: its folder, this worker's task, jobs posted or taken so far."""

    folder: Path
    info: TaskInfo
    jobs: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)


_session: Session | None = None  # the chief's, while its loop runs


def join(cfg: Config) -> Session:
    """Create the strategy and agree on this launch's session folder with the other workers.

    Raises:
        ConfigError: ``train.distribution`` is not ``multi_worker``, or TF_CONFIG is invalid.
    """
    if cfg.train.distribution != "multi_worker":
        raise ConfigError(
            f"train-worker needs train.distribution = 'multi_worker' in [train] (it is "
            f"'{cfg.train.distribution}'); use `evergreen run` for one process"
        )
    info = task_info()
    strategy = multi_worker_strategy()  # before anything else starts TensorFlow's runtime
    from evergreen.tf import tensorflow

    tf = tensorflow()
    mine = float(secrets.randbits(48)) if info.is_chief else 0.0
    total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(mine, tf.float64)), axis=None)
    folder = cfg.root / SESSIONS / f"session-{int(total.numpy()):012x}"
    return Session(folder, info)


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


def post_job(
    component: Any, inputs: dict[str, Artifact], checkpoint_dir: Path, info: TaskInfo
) -> None:
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
        "inputs": {name: asdict(a) for name, a in inputs.items()},
        "checkpoint_dir": str(checkpoint_dir),
    }
    _write_json(_session.folder / f"job-{_session.jobs}.json", job)


def serve_jobs(session: Session, cfg: Config) -> bool:
    """A non-chief worker's life: train each job the chief posts until it writes ``end.json``.

    Returns:
        Whether the chief's loop succeeded.

    Raises:
        WorkerLost: no heartbeat from the chief for ``CHIEF_SILENT_SECONDS``.
    """
    started = time.time()
    while True:
        job = session.folder / f"job-{session.jobs + 1}.json"
        if job.is_file():
            session.jobs += 1
            result = run_job(json.loads(job.read_text(encoding="utf-8")), cfg)
            done = {
                "resumed_from_epoch": result.resumed_from_epoch,
                "epochs": len(result.history.get("loss", [])),
                "optimizer_iterations": result.optimizer_iterations,
                "weights_sha256": result.weights_sha256,
            }
            _write_json(job.with_name(f"{job.stem}.worker-{session.info.index}.json"), done)
            continue
        end = session.folder / "end.json"
        if end.is_file():
            return bool(json.loads(end.read_text(encoding="utf-8"))["ok"])
        _check_chief(session, started)
        time.sleep(POLL_SECONDS)


def _check_chief(session: Session, started: float) -> None:
    alive = session.folder / "chief.alive"
    try:
        last = alive.stat().st_mtime
    except OSError:
        last = started  # the chief has not started its session yet
    if time.time() - last > CHIEF_SILENT_SECONDS:
        raise WorkerLost(
            f"no heartbeat from the chief in {session.folder} for {CHIEF_SILENT_SECONDS:.0f} s: "
            "restart every worker (training resumes from the last checkpoint)"
        )


def run_job(job: dict[str, Any], cfg: Config) -> Any:
    """Train one posted job on this (non-chief) worker; the chief keeps the model.

    Returns:
        The :class:`~evergreen.training.multi_worker.LoopResult` (what it trained, not kept).
    """
    from evergreen.components.train import TrainModel
    from evergreen.models.registry import family
    from evergreen.training import multi_worker

    train_cfg = TrainConfig(**job["train"])
    component = TrainModel(
        train_cfg,
        family(train_cfg.family, train_cfg, cfg.base_dir),
        mode=job["mode"],
        reason=job["reason"],
        new_span=int(job["new_span"]),
    )
    inputs = {name: Artifact(**a) for name, a in job["inputs"].items()}
    checkpoint_dir = Path(job["checkpoint_dir"])
    with multi_worker.lost_workers_reported(checkpoint_dir):
        return multi_worker.train(component, inputs, checkpoint_dir, log_dir=None)


def describe(info: TaskInfo | None = None) -> str:
    """``worker i of n`` for log lines."""
    info = info or task_info()
    return f"{info.task_type} {info.index} of {info.workers}"
