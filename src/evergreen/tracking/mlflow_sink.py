"""MLflow: runs, metrics and the run record; every published version as a model version.

Optional (``pip install evergreen[mlflow]``) and lazy: ``mlflow`` is imported only when
``[mlflow] tracking_uri`` is set. Each loop record becomes one MLflow run (params: mode, family,
span and the ``[train]`` knobs; metrics: :func:`evergreen.tracking.record_scalars` plus drift;
the record as ``run_record.json``). A published version is logged as an ``mlflow.pyfunc`` model
that loads the registry's SavedModel and calls ``serving_default`` (MLflow cannot log our
SavedModel directly: "Unknown model type _UserObject"), registered under the configured name
with tag ``evergreen_version``; the aliases ``champion`` and ``canary`` follow ours.

Any MLflow failure (server down, store locked) is a warning: the pipeline run stands.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow.pyfunc  # this module is itself imported only when [mlflow] is set
import numpy as np

from evergreen.tracking.scalars import drift_scores, record_scalars

log = logging.getLogger(__name__)

VERSION_TAG = "evergreen_version"
ALIASES = ("champion", "canary")
ARTIFACTS_DIR = "mlflow-artifacts"  # under the root, for file and SQLite tracking stores


class EvergreenSavedModel(mlflow.pyfunc.PythonModel):
    """pyfunc model: a registry SavedModel's ``serving_default`` on raw columns.

    ``predict`` takes a DataFrame whose columns are the raw inputs (a text model: ``text``) or
    a list of strings for a one-input model, and returns a DataFrame of class probabilities,
    one column per class.
    """

    def load_context(self, context: Any) -> None:
        from evergreen.models.saved_model import raw_inputs_of
        from evergreen.tf import tensorflow

        self.path = Path(context.artifacts["saved_model"])
        self.columns = raw_inputs_of(self.path)
        # Loaded once here, not per predict call (a SavedModel load takes seconds).
        self.serve = tensorflow().saved_model.load(str(self.path)).signatures["serving_default"]

    # No type hints: MLflow would read them as a schema it cannot check (and warn).
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import pandas as pd

        from evergreen.models.saved_model import to_tensor as _tensor

        plain = not isinstance(model_input, pd.DataFrame) or (
            len(model_input.columns) == 1 and len(self.columns) <= 1
        )
        if isinstance(model_input, pd.DataFrame):
            rows = (
                [str(v) for v in model_input.iloc[:, 0]]
                if plain
                else model_input.to_dict(orient="records")
            )
        else:
            rows = [str(v) for v in np.ravel(model_input)]
        if not rows:
            return pd.DataFrame()
        feed = {}
        for name, spec in self.serve.structured_input_signature[1].items():
            column = self.columns.get(name, name)
            values = rows if plain else [row.get(column) for row in rows]
            feed[name] = _tensor(values, spec.dtype)
        out = self.serve(**feed)
        labels = [c.decode() for c in out["classes"].numpy()[0]]
        return pd.DataFrame(out["scores"].numpy(), columns=labels)


def _client(cfg: Any) -> Any:
    import mlflow
    from mlflow import MlflowClient

    uri = cfg.tracking.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_name(cfg: Any) -> str:
    return cfg.tracking.mlflow_registered_model or cfg.name


def _experiment(client: Any, cfg: Any) -> str:
    name = cfg.tracking.mlflow_experiment or cfg.name
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if cfg.tracking.mlflow_tracking_uri.split(":", 1)[0] in ("sqlite", "file"):
        # Else MLflow puts artifacts in ./mlruns of whatever folder the command ran from.
        location = (Path(cfg.root).resolve() / ARTIFACTS_DIR).as_uri()
    return client.create_experiment(name, artifact_location=location)


def log_record(project: Any, record: Mapping[str, Any]) -> str | None:
    """Log one loop record as an MLflow run (and its published version); returns the run id.

    Never raises for an MLflow problem: it is logged as a warning and None is returned.
    """
    try:
        return _log_record(project, record)
    except Exception as e:  # noqa: BLE001  (MLflow must never fail a pipeline run)
        log.warning(
            "MLflow logging failed for span %s (the run itself is fine): %s", record.get("span"), e
        )
        return None


def _log_record(project: Any, record: Mapping[str, Any]) -> str:
    from mlflow.entities import Metric, Param

    cfg = project.config
    client = _client(cfg)
    experiment = _experiment(client, cfg)
    run = client.create_run(
        experiment,
        run_name=f"{cfg.name}-span-{record['span']}",
        tags={"evergreen.pipeline": cfg.name, "evergreen.span": str(record["span"])},
    )
    run_id = run.info.run_id
    params = {
        "mode": record.get("mode"),
        "family": cfg.train.family,
        "span": record["span"],
        "blessed": record.get("blessed"),
        **{f"train.{k}": v for k, v in asdict(cfg.train).items() if not isinstance(v, dict)},
    }
    metrics = {**record_scalars(record), **drift_scores(project.store, record["span"])}
    stamp = int(run.info.start_time)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, stamp, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)[:500]) for k, v in params.items()],
    )
    client.log_dict(run_id, json.loads(json.dumps(record, default=str)), "run_record.json")
    status = "FINISHED"
    try:
        if record.get("version") is not None and record.get("blessed"):
            _register(client, cfg, run_id, int(record["version"]))
            _backfill(client, cfg, experiment)
            _sync(client, cfg)
    except Exception:
        status = "FAILED"
        raise
    finally:
        client.set_terminated(run_id, status)
    return run_id


def _register(client: Any, cfg: Any, run_id: str, version: int) -> None:
    """Log the registry version as a pyfunc model in ``run_id`` and register it (once)."""
    import mlflow

    from evergreen.registry import Registry

    name = model_name(cfg)
    if _model_version(client, name, version) is not None:
        return
    path = Registry(cfg.registry_dir).get(cfg.name, version).path
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=EvergreenSavedModel(),
            artifacts={"saved_model": str(path)},
            registered_model_name=name,
            # Explicit: MLflow's inference would load the model in a subprocess (slow).
            pip_requirements=["tensorflow>=2.21", "evergreen"],
        )
    client.set_model_version_tag(
        name, str(info.registered_model_version), VERSION_TAG, str(version)
    )


def _backfill(client: Any, cfg: Any, experiment: str) -> None:
    """Register every registry version MLflow lacks (e.g. published while its server was down),
    each in a run of its own, so that the aliases can point at any of them."""
    from evergreen.registry import Registry

    for version in Registry(cfg.registry_dir).version_numbers(cfg.name):
        if _model_version(client, model_name(cfg), version) is not None:
            continue
        run = client.create_run(
            experiment,
            run_name=f"{cfg.name}-version-{version}-backfill",
            tags={"evergreen.pipeline": cfg.name, "evergreen.backfill": str(version)},
        )
        try:
            _register(client, cfg, run.info.run_id, version)
        finally:
            client.set_terminated(run.info.run_id)


def _model_version(client: Any, name: str, version: int) -> str | None:
    """The MLflow model version that holds our registry ``version`` (by its tag)."""
    try:
        found = client.search_model_versions(f"name='{name}'")
    except Exception:  # noqa: BLE001  (no registered model yet)
        return None
    for mv in found:
        if (mv.tags or {}).get(VERSION_TAG) == str(version):
            return str(mv.version)
    return None


def sync_aliases(cfg: Any) -> None:
    """Point MLflow's ``champion``/``canary`` at the model versions of ours; warn on failure."""
    try:
        _sync(_client(cfg), cfg)
    except Exception as e:  # noqa: BLE001
        log.warning("MLflow aliases were not updated (the registry's are): %s", e)


def _sync(client: Any, cfg: Any) -> None:
    from evergreen.registry import Registry

    registry = Registry(cfg.registry_dir)
    name = model_name(cfg)
    for alias in ALIASES:
        ours = registry.alias(cfg.name, alias)
        theirs = _model_version(client, name, ours) if ours is not None else None
        if theirs is not None:
            client.set_registered_model_alias(name, alias, theirs)
        elif ours is None:
            try:
                client.delete_registered_model_alias(name, alias)
            except Exception:  # noqa: BLE001, S110  (it was not set)
                pass
