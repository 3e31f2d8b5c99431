"""The retrain policy: incremental update, full retrain, or block — and why.

:func:`decide` is a pure function of what is known before training a span: its drift report,
the unknown-token rate under the champion's frozen vocabulary, how many increments have run
since the last full retrain, and whether the last incremental candidate forgot the past. Every
rule that fires adds a reason; the strongest mode wins (block > full > incremental)::

    block        the span's labels collapsed to one class (drift.block_on_single_label), or
                 drift reached drift.block_on
    full         no champion; drift reached drift.full_retrain_on (the reason names the
                 features and scores); unknown-token rate above train.max_unknown_rate;
                 train.full_every increments since the last full retrain; the last candidate
                 regressed on the historic holdout beyond train.max_historic_regression
    incremental  otherwise (minor drift is named in the reasons, but does not force a retrain)

An increment can carry a **challenger**: when the increments since the last full retrain
brought ``train.full_after_growth`` times the rows that retrain saw (the quality debt), the
increment runs as usual, then a full retrain on every span is trained beside it and replaces
the champion only if its loss on the evaluation rows is lower (:attr:`Decision.challenger`).
A weak early model that increments never catch up with is replaced; a strong increment is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from evergreen.components.drift import DriftResult, at_least
from evergreen.components.drift import find_report as find_drift_report
from evergreen.config import DriftConfig

__all__ = ["MODES", "Decision", "decide", "find_drift_report", "hard_rule"]

MODES = ("incremental", "full", "block")


@dataclass(frozen=True)
class Decision:
    mode: str  # incremental, full, or block
    reasons: list[str] = field(default_factory=list)
    # Incremental only: why a full retrain challenges the increment after it ("": none).
    challenger: str = ""

    @property
    def reason(self) -> str:
        """The reasons as one line, the deciding one first."""
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "reasons": list(self.reasons)}
        if self.challenger:
            out["challenger"] = self.challenger
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(data["mode"], list(data["reasons"]), data.get("challenger", ""))


def hard_rule(
    *, has_champion: bool, force_full: bool = False, new_labels: Iterable[str] = ()
) -> Decision | None:
    """The rules no measurement overrules, or None: then :func:`decide` weighs the rest.

    The one place they live: no champion yet (the first model is a full training); ``--full``
    asked for; a label class the champion does not know (its output layer has no place for it).
    """
    if not has_champion:
        return Decision("full", ["no champion yet"])
    if force_full:
        return Decision("full", ["requested with --full"])
    new = sorted(set(new_labels))
    if new:
        return Decision("full", [f"new label classes {new}"])
    return None


def decide(
    drift: DriftResult | None,
    *,
    cfg: DriftConfig,
    unknown_rate: float | None = None,
    max_unknown_rate: float = 0.25,
    increments_since_full: int = 0,
    full_every: int = 0,
    historic_regression: float | None = None,
    max_historic_regression: float = 0.005,
    rate_name: str = "unknown-token rate",
    data_growth: float | None = None,
    full_after_growth: float = 0.0,
) -> Decision:
    """The mode for the next training run on a span, with every reason that applies.

    Args:
        drift: the span's drift report (None: drift is off or not computed; no drift rule fires).
        cfg: the ``[drift]`` config (``full_retrain_on``, ``block_on``, ``block_on_single_label``).
        unknown_rate: the new span's unknown-token rate under the champion's vocabulary (None:
            not a text model, or not measured); falls back to the drift report's estimate.
        max_unknown_rate: above this rate the featurizer no longer fits: full (default 0.25).
        increments_since_full: incremental runs since the last full retrain.
        full_every: a full retrain after this many increments (0: never by count).
        historic_regression: how much the last incremental candidate lost in accuracy on the
            historic holdout against its champion (positive = worse; None: unknown).
        max_historic_regression: beyond this the model is forgetting: full (default 0.005).
        rate_name: what the unknown rate counts, for the reasons ("unknown-value rate" for
            tabular categories).
        data_growth: the quality debt — train rows taken in by increments since the last full
            retrain (this span included), over the rows that full retrain saw (None: unknown).
        full_after_growth: at or beyond this growth, a full retrain challenges the increment
            (0: never). 1.0 challenges each time the data doubles: the full retrains' total
            cost stays within a constant factor (about 2x) of one full retrain on all the
            data, so the cost per row stays bounded while the champion is never compared with
            a full fit on less than half of the data.
    """
    blocks, fulls, notes = _drift_rules(drift, cfg) if drift is not None else ([], [], [])
    if unknown_rate is None and drift is not None:
        unknown_rate = drift.unknown_rate
    fulls += _unknown_rate_rule(unknown_rate, max_unknown_rate, rate_name)
    fulls += _debt_rules(
        increments_since_full, full_every, historic_regression, max_historic_regression
    )
    if blocks:
        return Decision("block", blocks + fulls + notes)
    if fulls:
        return Decision("full", fulls + notes)
    rate = f"{rate_name} {unknown_rate:.2f}" if unknown_rate is not None else ""
    fits = "the champion fits the new span" + (f" ({rate})" if rate else "")
    challenger = _growth_challenge(data_growth, full_after_growth)
    reasons = [fits, *notes] + ([challenger] if challenger else [])
    return Decision("incremental", reasons, challenger)


def _drift_rules(drift: DriftResult, cfg: DriftConfig) -> tuple[list[str], list[str], list[str]]:
    """The reasons a drift report gives to block, to retrain in full, and to note only."""
    blocks: list[str] = []
    fulls: list[str] = []
    notes: list[str] = []
    labels = {k for k, n in drift.labels.items() if n > 0}
    reference = {k for k, n in drift.reference_labels.items() if n > 0}
    if cfg.block_on_single_label and len(labels) == 1 and len(reference) > 1:
        blocks.append(
            f"the span's labels collapsed to one class ({next(iter(labels))!r}; earlier spans "
            f"had {len(reference)}); set drift.block_on_single_label = false if this is expected"
        )
    if at_least(drift.severity, cfg.block_on):
        blocks.append(
            f"{drift.severity} drift in {_describe(drift, cfg.block_on)} "
            f"(drift.block_on = {cfg.block_on!r})"
        )
    if at_least(drift.severity, cfg.full_retrain_on):
        fulls.append(
            f"{drift.severity} drift in {_describe(drift, cfg.full_retrain_on)} "
            f"(drift.full_retrain_on = {cfg.full_retrain_on!r})"
        )
    elif drift.severity != "none":
        notes.append(f"{drift.severity} drift in {_describe(drift, 'minor')}")
    return blocks, fulls, notes


def _unknown_rate_rule(rate: float | None, max_rate: float, rate_name: str) -> list[str]:
    """A full retrain when too much of the new span falls outside the champion's featurizer."""
    if rate is not None and rate > max_rate:
        return [f"{rate_name} {rate:.2f} above train.max_unknown_rate = {max_rate}"]
    return []


def _debt_rules(
    increments_since_full: int,
    full_every: int,
    historic_regression: float | None,
    max_historic_regression: float,
) -> list[str]:
    """The reasons the increments since the last full retrain give for a full one."""
    fulls = []
    if full_every and increments_since_full >= full_every:
        fulls.append(
            f"{increments_since_full} increments since the last full retrain "
            f"(train.full_every = {full_every})"
        )
    if historic_regression is not None and historic_regression > max_historic_regression:
        fulls.append(
            f"forgetting: the last candidate lost {historic_regression:.3f} historic accuracy "
            f"(train.max_historic_regression = {max_historic_regression})"
        )
    return fulls


def _growth_challenge(data_growth: float | None, full_after_growth: float) -> str:
    """Why a full retrain should challenge this increment (the quality debt), or ``""``."""
    if not full_after_growth or data_growth is None or data_growth < full_after_growth:
        return ""
    return (
        f"quality debt: increments since the last full retrain brought {data_growth:.2f}x its "
        f"rows (train.full_after_growth = {full_after_growth}): a full retrain challenges the "
        "increment"
    )


def _describe(drift: DriftResult, level: str) -> str:
    """``'review' (js_distance 0.41 vs window), 'score' (linf 0.30 vs previous)``."""
    parts = []
    seen: set[str] = set()
    for alarm in drift.alarms:
        if alarm.feature in seen or not at_least(alarm.severity, level):
            continue
        seen.add(alarm.feature)
        parts.append(f"{alarm.feature!r} ({alarm.metric} {alarm.value:.2f} vs {alarm.reference})")
    return ", ".join(parts) if parts else "no feature"
