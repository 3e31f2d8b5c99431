"""The run record of a span, from its plan and what its component runs left behind."""

from __future__ import annotations

from typing import Any

from evergreen.loop.plan import BLOCK, SpanPlan
from evergreen.records import Evaluation, Ledger, RunRecord


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in seconds.items()}


def not_trained(plan: SpanPlan, reason: str, seconds: dict[str, float]) -> RunRecord:
    """The record of a span nothing was trained for (blocked by policy or validation)."""
    return RunRecord(
        span=plan.span,
        mode=BLOCK,
        reason=reason,
        rows_new=plan.rows_new,
        rows_total=plan.rows_total,
        ledger=Ledger(),
        seconds=_rounded(seconds),
        metrics={"candidate": {}, "champion": {}},
        blessed=False,
        verdict=[f"not trained: {reason}"],
        version=None,
        drift=plan.drift,
    )


def already_champion(plan: SpanPlan, seconds: dict[str, float], version: int | None) -> RunRecord:
    """``run --full`` with nothing new: the training it asks for made the champion itself."""
    record = not_trained(plan, plan.reason, seconds)
    record.mode = plan.mode
    record.verdict = [
        f"nothing new: the champion (version {version}) is already this {plan.mode} training "
        f"on spans {sorted(plan.examples)}"
    ]
    record.version = version
    return record


def trained(
    plan: SpanPlan,
    ledger: Ledger,
    seconds: dict[str, float],
    evaluation: Evaluation,
    version: int | None,
    *,
    growth: dict[str, Any] | None,
    epoch_losses: dict[str, list[float]],
) -> RunRecord:
    """The record of a trained span: cost, both models' metrics, the verdict, the version."""
    return RunRecord(
        span=plan.span,
        mode=plan.mode,
        reason=plan.reason,
        rows_new=plan.rows_new,
        rows_total=plan.rows_total,
        ledger=ledger,
        seconds=_rounded(seconds),
        metrics={"candidate": evaluation.candidate, "champion": evaluation.champion},
        blessed=evaluation.blessed,
        verdict=evaluation.reasons,
        version=version,
        drift=plan.drift,
        featurizer_growth=growth,
        slices=evaluation.slices,
        epoch_losses=epoch_losses,
        challenger=plan.challenging,
        challenge=plan.challenger,
    )


def adopted(
    plan: SpanPlan,
    ledger: Ledger,
    seconds: dict[str, float],
    evaluation: Evaluation,
    version: int | None,
) -> RunRecord:
    """The record of an adopted model: every span is new to it; it is the champion now."""
    assert plan.adoption is not None
    return RunRecord(
        span=plan.span,
        mode=plan.mode,
        reason=f"adopted from {plan.adoption.source}",
        rows_new=plan.rows_total,
        rows_total=plan.rows_total,
        ledger=ledger,
        seconds=_rounded(seconds),
        metrics={"candidate": evaluation.candidate, "champion": {}},
        blessed=True,
        verdict=["adopted: evaluated, published and made champion"],
        version=version,
    )
