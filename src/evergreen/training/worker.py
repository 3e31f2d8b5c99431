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

import json
import secrets
import time
from pathlib import Path
from typing import Any

from evergreen.config import Config, TrainConfig
from evergreen.errors import ConfigError, WorkerLost
from evergreen.training.data import TrainInputs, TrainJob

# The chief's session lives below this module and multi_worker (no import cycle); its names
# stay importable from here, where `evergreen train-worker` and the tests find them.
from evergreen.training.session import (  # noqa: F401 (re-exported)
    HEARTBEAT_SECONDS,
    Session,
    _write_json,
    chief,
    post_job,
)
from evergreen.training.strategy import TaskInfo, multi_worker_strategy, task_info

SESSIONS = "distributed"  # under the project root
CHIEF_SILENT_SECONDS = 300.0  # a chief heard from less recently than this is gone
POLL_SECONDS = 0.2


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
    from evergreen.models.registry import family
    from evergreen.training import multi_worker

    train_cfg = TrainConfig(**job["train"])
    component = TrainJob(
        train_cfg,
        family(train_cfg.family, train_cfg, cfg.base_dir),
        mode=job["mode"],
        reason=job["reason"],
        new_span=int(job["new_span"]),
    )
    inputs = TrainInputs.from_json(job["inputs"])
    checkpoint_dir = Path(job["checkpoint_dir"])
    with multi_worker.lost_workers_reported(checkpoint_dir):
        return multi_worker.train(component, inputs, checkpoint_dir, log_dir=None)


def describe(info: TaskInfo | None = None) -> str:
    """``worker i of n`` for log lines."""
    info = info or task_info()
    return f"{info.task_type} {info.index} of {info.workers}"
