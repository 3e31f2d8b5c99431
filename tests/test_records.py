"""The loop's typed records: their dict forms are the JSON contract, and they round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evergreen.records import Evaluation, Ledger, RunRecord

TRAINED: dict[str, Any] = {
    "span": 2,
    "mode": "incremental",
    "reason": "drift none; unknown-token rate 1.2% ≤ 5%",
    "rows_new": 500,
    "rows_total": 2500,
    "tokens_computed": 31000,
    "tokens_reused": 0,
    "rows_featurized": 500,
    "rows_reused": 1000,
    "tokens_full_retrain": 170000,
    "rows_full_retrain": 2500,
    "seconds": {"ingest": 0.2, "featurize": 0.4, "train": 3.1},
    "metrics": {"candidate": {"new": {"accuracy": 0.8}}, "champion": {"new": {"accuracy": 0.7}}},
    "blessed": True,
    "verdict": ["new accuracy 0.800 vs champion 0.700, within limit"],
    "version": 2,
    "drift": "none",
    "featurizer_growth": {"from": 3, "to": 9, "added": {"review": 4}, "sample": {}},
    "epoch_losses": {"loss": [0.4, 0.3], "val_loss": [0.5, 0.45]},
    "report": "/p/.evergreen/reports/span-2.html",
}
SLICED = {
    **{k: v for k, v in TRAINED.items() if k not in ("epoch_losses", "report")},
    "slices": {"plan": {"yes": {"new": {"rows": 40, "small": True}}}},
    "epoch_losses": {"loss": [0.4], "val_loss": [0.5]},
}
BLOCKED: dict[str, Any] = {
    "span": 3,
    "mode": "block",
    "reason": "major drift in 'review'; change the span's data or the [drift] config and run again",
    "rows_new": 500,
    "rows_total": 3000,
    "tokens_computed": 0,
    "tokens_reused": 0,
    "rows_featurized": 0,
    "rows_reused": 0,
    "seconds": {"drift": 0.1},
    "metrics": {"candidate": {}, "champion": {}},
    "blessed": False,
    "verdict": ["not trained: major drift in 'review'; ..."],
    "version": None,
    "drift": None,
}
ADOPTED: dict[str, Any] = {
    "span": 2,
    "mode": "adopted",
    "reason": "adopted from /models/churn.keras",
    "rows_new": 600,
    "rows_total": 600,
    "tokens_computed": 0,
    "tokens_reused": 0,
    "rows_featurized": 600,
    "rows_reused": 0,
    "seconds": {"featurize": 0.3, "adopt": 1.0, "evaluate": 0.5, "push": 0.2},
    "metrics": {"candidate": {"new": {"accuracy": 0.9}}, "champion": {}},
    "blessed": True,
    "verdict": ["adopted: evaluated, published and made champion"],
    "version": 1,
}


@pytest.mark.parametrize(
    "record", [TRAINED, SLICED, BLOCKED, ADOPTED], ids=["trained", "sliced", "blocked", "adopted"]
)
def test_run_record_round_trips_to_the_same_dict_and_key_order(record: dict[str, Any]) -> None:
    typed = RunRecord.from_dict(record)
    assert typed.to_dict() == record
    assert list(typed.to_dict()) == list(record)  # the --json output keeps its key order
    assert RunRecord.from_dict(json.loads(json.dumps(typed.to_dict()))) == typed


def test_ledger_leaves_out_an_unknown_full_retrain_cost() -> None:
    ledger = Ledger()
    ledger.add({"tokens_computed": 5, "tokens_reused": 1, "rows_featurized": 2, "rows_reused": 0})
    assert ledger.to_dict() == {
        "tokens_computed": 5,
        "tokens_reused": 1,
        "rows_featurized": 2,
        "rows_reused": 0,
    }
    ledger.tokens_full_retrain, ledger.rows_full_retrain = 50, 20
    assert Ledger.from_dict(ledger.to_dict()) == ledger


def test_evaluation_round_trips_and_reads_the_forgetting_guard() -> None:
    data = {
        "candidate": {"new": {"auc": 0.8}, "historic": {"auc": 0.7}},
        "champion": {"new": {"auc": 0.79}, "historic": {"auc": 0.75}},
        "new_spans": [3],
        "primary_metric": "auc",
        "guards": {"historic": {"metric": "auc", "drop": 0.05, "noise": 0.02, "regressed": True}},
        "blessed": False,
        "reasons": ["historic auc fell 5.0 points"],
    }
    evaluation = Evaluation.from_dict(data)
    assert evaluation.to_dict() == data and list(evaluation.to_dict()) == list(data)
    assert evaluation.forgetting() == pytest.approx(0.03)
    assert Evaluation.from_dict({**data, "guards": {}}).forgetting() is None
    sliced = {**data, "slices": {"plan": {}}}
    assert Evaluation.from_dict(sliced).to_dict() == sliced
