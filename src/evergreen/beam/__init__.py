"""Data stages on Apache Beam: ingest, statistics and featurize of a span as Beam pipelines.

Chosen when the config has a ``[beam]`` section; its ``pipeline_args`` go to Beam's
``PipelineOptions`` unchanged, so DirectRunner (tested here), FlinkRunner, SparkRunner and
DataflowRunner are a matter of options. The components are the embedded ones with a Beam
``execute``: the same cores (``RowProcessor``, ``SpanStatistics``, the family's featurizer),
the same artifacts, committed once by the runner's atomic artifact folders. Drift needs no
pipeline: it reads only the statistics artifacts' sketches.

Beam is an optional extra (``pip install evergreen[beam]``): nothing here imports it at module
load, so the embedded path never pays for it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evergreen.artifacts import TMP_PREFIX
from evergreen.config import BeamConfig
from evergreen.errors import BeamError, ConfigError


def beam() -> Any:
    """The ``apache_beam`` module.

    Raises:
        ConfigError: Beam is not installed while the config asks for it.
    """
    try:
        import apache_beam
    except ImportError:
        raise ConfigError(
            "the config has a [beam] section but Apache Beam is not installed: "
            "pip install 'evergreen[beam]', or remove [beam] to run the data stages embedded"
        ) from None
    return apache_beam


def pipeline_options(config: BeamConfig) -> Any:
    """Beam ``PipelineOptions`` from ``[beam] pipeline_args``, passed through unchanged."""
    beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(config.pipeline_args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        # Workers log every gRPC channel at INFO; a user's own setting wins.
        args.append("--default_sdk_harness_log_level=WARNING")
    return PipelineOptions(args)


class Scratch:
    """A temporary folder beside an artifact for a pipeline's side outputs; removed on exit.

    Its name carries the TMP prefix and this process's id, so a killed run's leftovers are swept
    like any temporary artifact folder.
    """

    def __init__(self, beside: Path, name: str) -> None:
        self.path = beside.parent / f"{TMP_PREFIX}beam-{name}-{os.getpid()}"
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def prefix(self, name: str) -> str:
        return str(self.path / name)

    def json_lines(self, name: str) -> Iterator[Any]:
        """Every JSON line of the text shards written under ``prefix(name)``."""
        for shard in sorted(self.path.glob(f"{name}-*")):
            with open(shard, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def check_conservation(
    stage: str, expected: int, accounted: dict[str, int], detail: str = ""
) -> None:
    """Refuse a pipeline result that lost (or invented) rows, before anything is committed.

    Every input row must come out as exactly one of ``accounted`` (kept, quarantined,
    duplicate ...). A runner that drops data (DirectRunner's multi-processing mode did, once,
    under heavy load: tens of thousands of rows of a 200,000-row span, with no error) fails the
    run here instead of committing a short artifact.

    ``detail`` (the pipeline's per-stage row counts, say) is added to the message.

    Raises:
        BeamError: the counts do not add up.
    """
    total = sum(accounted.values())
    if total != expected:
        parts = ", ".join(f"{k} {v:,}" for k, v in accounted.items())
        if detail:
            parts += f"; {detail}"
        raise BeamError(
            f"{stage} on Beam accounted for {total:,} of {expected:,} rows ({parts}): the runner "
            "lost or duplicated data, so nothing was committed. Run again; if it repeats, run "
            "with fewer workers or without [beam], and report the runner and its options"
        )
