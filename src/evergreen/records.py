"""Typed records of the training loop: a span's run record, its cost ledger, its evaluation.

Each is a dataclass whose ``to_dict()`` is the JSON form the rest of Evergreen renders (the
``--json`` output, ``reports/span-N.json``, the registry manifest's ``cost``) and whose
``from_dict()`` reads that form back. The dict forms are a contract: their keys and key order
are what earlier versions wrote, so a record read from an old report round-trips unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

COUNTERS = ("tokens_computed", "tokens_reused", "rows_featurized", "rows_reused")


@dataclass
class Ledger:
    """What a run computed and reused, and what a full retrain on every span would compute.

    ``tokens_computed`` is every tokenization the run did: featurize, a full retrain's
    vocabulary fit, an increment's growth pass and the policy's unknown-rate check.
    ``tokens_full_retrain`` is a full retrain's fit over every train row plus its featurize of
    every span (docs/cost.md, "What the ledger counts"). The full-retrain cost is None where
    it is not known (a blocked span, an adopted model): then it is left out of the dict form.
    """

    tokens_computed: int = 0
    tokens_reused: int = 0
    rows_featurized: int = 0
    rows_reused: int = 0
    tokens_full_retrain: int | None = None
    rows_full_retrain: int | None = None

    def add(self, counts: Mapping[str, Any]) -> None:
        """Add a featurize run's counters (its summary holds :data:`COUNTERS`)."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + int(counts[name]))

    def to_dict(self) -> dict[str, int]:
        out = {name: getattr(self, name) for name in COUNTERS}
        if self.tokens_full_retrain is not None:
            out["tokens_full_retrain"] = self.tokens_full_retrain
        if self.rows_full_retrain is not None:
            out["rows_full_retrain"] = self.rows_full_retrain
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ledger:
        return cls(
            **{name: int(data.get(name, 0)) for name in COUNTERS},
            tokens_full_retrain=data.get("tokens_full_retrain"),
            rows_full_retrain=data.get("rows_full_retrain"),
        )


@dataclass
class Evaluation:
    """The evaluator's verdict: metrics of both models per set, the guards and the outcome.

    ``guards`` maps a guard (``new``, ``historic``, ``new_loss``, ...) to its outcome: the
    metric, the drop, the noise allowance and whether it regressed. ``reasons`` says why the
    candidate is (not) blessed, one line per guard or refusal.
    """

    candidate: dict[str, Any]
    champion: dict[str, Any]
    new_spans: list[int]
    primary_metric: str = ""
    guards: dict[str, dict[str, Any]] = field(default_factory=dict)
    blessed: bool = False
    reasons: list[str] = field(default_factory=list)
    slices: dict[str, Any] | None = None  # only when [evaluate] slices are configured

    def to_dict(self) -> dict[str, Any]:
        out = {
            "candidate": self.candidate,
            "champion": self.champion,
            "new_spans": self.new_spans,
            "primary_metric": self.primary_metric,
            "guards": self.guards,
            "blessed": self.blessed,
            "reasons": self.reasons,
        }
        if self.slices is not None:
            out["slices"] = self.slices
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(
            candidate=dict(data.get("candidate") or {}),
            champion=dict(data.get("champion") or {}),
            new_spans=list(data.get("new_spans") or []),
            primary_metric=data.get("primary_metric", ""),
            guards=dict(data.get("guards") or {}),
            blessed=bool(data.get("blessed", False)),
            reasons=list(data.get("reasons") or []),
            slices=data.get("slices"),
        )

    def forgetting(self) -> float | None:
        """How far beyond noise the candidate fell on the historic holdout (None: unknown)."""
        guard = self.guards.get("historic")
        return guard["drop"] - guard["noise"] if guard else None


@dataclass
class RunRecord:
    """What ``TrainingLoop.run`` returns per span (and ``adopt`` once): mode, cost, verdict.

    ``epoch_losses`` is None for a record whose run trained nothing here (blocked, the champion
    already is this training, or an adopted model); such records have no
    ``featurizer_growth``/``epoch_losses`` keys. An adopted model's record has no ``drift`` key. ``report`` is the HTML report's
    path, set once it is written. ``challenger`` marks the full retrain the quality debt ran
    after the span's increment (the key is there only then); ``challenge`` is, on that
    increment's record, why the challenger follows it (the key is there only then: a run killed
    between the two resumes the challenge from it).
    """

    span: int
    mode: str
    reason: str
    rows_new: int
    rows_total: int
    ledger: Ledger
    seconds: dict[str, float]
    metrics: dict[str, Any]
    blessed: bool
    verdict: list[str]
    version: int | None
    drift: str | None = None
    featurizer_growth: dict[str, Any] | None = None
    slices: dict[str, Any] | None = None
    epoch_losses: dict[str, list[float]] | None = None
    report: str | None = None
    challenger: bool = False
    challenge: str = ""

    @property
    def trained(self) -> bool:
        """Whether a model was trained in this record's run (adopting is not training)."""
        return self.epoch_losses is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "span": self.span,
            "mode": self.mode,
            "reason": self.reason,
            "rows_new": self.rows_new,
            "rows_total": self.rows_total,
            **self.ledger.to_dict(),
            "seconds": self.seconds,
            "metrics": self.metrics,
            "blessed": self.blessed,
            "verdict": self.verdict,
            "version": self.version,
        }
        if self.mode != "adopted":
            out["drift"] = self.drift
        if self.trained:
            out["featurizer_growth"] = self.featurizer_growth
            if self.slices is not None:
                out["slices"] = self.slices
            out["epoch_losses"] = self.epoch_losses
        if self.report is not None:
            out["report"] = self.report
        if self.challenger:
            out["challenger"] = True
        if self.challenge:
            out["challenge"] = self.challenge
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        return cls(
            span=int(data["span"]),
            mode=data["mode"],
            reason=data["reason"],
            rows_new=int(data["rows_new"]),
            rows_total=int(data["rows_total"]),
            ledger=Ledger.from_dict(data),
            seconds=dict(data.get("seconds") or {}),
            metrics=dict(data.get("metrics") or {}),
            blessed=bool(data["blessed"]),
            verdict=list(data.get("verdict") or []),
            version=data.get("version"),
            drift=data.get("drift"),
            featurizer_growth=data.get("featurizer_growth"),
            slices=data.get("slices"),
            epoch_losses=data.get("epoch_losses"),
            report=data.get("report"),
            challenger=bool(data.get("challenger", False)),
            challenge=str(data.get("challenge", "")),
        )
