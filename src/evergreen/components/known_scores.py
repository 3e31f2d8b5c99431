"""A model's scores on rows it was already evaluated on, kept beside its artifact (issue 13).

A candidate's evaluation scores it on the new span's eval rows and on the historic holdout.
Once blessed it is the champion, and the next evaluation scores it again on nearly the same
rows: the holdout gains one span's share and loses a few rows of the others, and the "new"
set's pooled rows are the previous span's. A model's scores on a row cannot change (its
artifact folder is never rewritten, and the row hash fixes every raw value of the row), so they
are kept in ``scores-cache-<model folder>/`` beside the Model artifact's folder (not in it: the
folder's content is the model's), keyed by row hash, and an evaluation scores the champion only
on rows it has not seen: the new span's.

Each evaluation that scores rows adds one file (written to a temporary name and renamed, so a
killed run leaves no half-written part, and two writers never collide); reading takes every
part. Each part also records the hashes of the SavedModel's graph and weights
(:func:`model_stamp`): a part of other weights (a folder written anew) is ignored.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evergreen import examples
from evergreen.artifacts import file_sha256
from evergreen.metadata import Artifact

SCORES_CACHE = "scores-cache"

Scorer = Callable[[list[dict[str, Any]]], tuple[np.ndarray, list[str]]]


class KnownScores:
    """The scores one model gave, by row hash (see the module docstring).

    Args:
        model: the ``Model`` artifact whose scores these are.
    """

    def __init__(self, model: Artifact) -> None:
        uri = Path(model.uri)
        self.folder = uri.parent / f"{SCORES_CACHE}-{uri.name}"
        self.stamp = model_stamp(uri / "saved_model")

    def load(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Every kept score: ``{row hash: class probabilities}`` and the model's label order."""
        known: dict[str, np.ndarray] = {}
        labels: list[str] = []
        for part in sorted(self.folder.glob("part-*.npz")):
            read = self._read(part)
            if read is not None:
                labels = read[2]
                known.update(zip(read[0], read[1], strict=True))
        return known, labels

    def _read(self, part: Path) -> tuple[list[str], np.ndarray, list[str]] | None:
        """One part's hashes, scores and labels; None for scores of other weights or a part
        that cannot be read (a cache: the rows are scored again, never judged on bad data)."""
        try:
            with np.load(part, allow_pickle=False) as data:
                if str(data["stamp"]) != self.stamp:
                    return None
                hashes = [h.decode("ascii") for h in data["hashes"].tolist()]
                scores = data["scores"]
                labels = json.loads(str(data["labels"]))
        except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile):
            return None
        if len(hashes) != len(scores) or scores.ndim != 2 or scores.shape[1] != len(labels):
            return None
        return hashes, scores, labels

    def add(self, hashes: Sequence[str], scores: np.ndarray, labels: Sequence[str]) -> None:
        """Keep ``scores`` (one row per hash, in ``labels`` order)."""
        if not len(hashes):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        partial = self.folder / f".partial-{os.getpid()}-{name}.npz"
        np.savez(
            partial,
            hashes=np.array([h.encode("ascii") for h in hashes], dtype=bytes),  # hex: 1 byte each
            scores=np.asarray(scores, dtype=np.float32),
            labels=np.array(json.dumps(list(labels))),
            stamp=np.array(self.stamp),
        )
        os.replace(partial, self.folder / f"part-{name}.npz")


def model_stamp(saved_model: Path) -> str:
    """What identifies a SavedModel's graph and weights: the hashes of ``saved_model.pb`` and of
    the variables' index (which holds a checksum of every tensor's bytes)."""
    files = (saved_model / "saved_model.pb", saved_model / "variables" / "variables.index")
    return ":".join(file_sha256(f) if f.is_file() else "-" for f in files)


def score_once(
    rows: Sequence[Mapping[str, Any]], score: Scorer, known: KnownScores | None
) -> tuple[np.ndarray, list[str], int]:
    """Scores of ``rows``: kept ones from ``known``, the others from ``score`` (then kept).

    Args:
        rows: raw rows, each with its row hash (:data:`evergreen.examples.ROW_HASH`).
        score: scores raw rows through the model (its SavedModel).
        known: the model's kept scores (None: score every row, keep nothing).

    Returns:
        Scores (float32, one row per row), the model's label order, and how many rows were
        scored by the model (the others came from ``known``).
    """
    cached, labels = known.load() if known is not None else ({}, [])
    missing = [i for i, row in enumerate(rows) if str(row[examples.ROW_HASH]) not in cached]
    if missing:
        fresh, fresh_labels = score([dict(rows[i]) for i in missing])
        if labels and fresh_labels != labels:  # cannot happen for one model; never mix orders
            cached, missing = {}, list(range(len(rows)))
            fresh, fresh_labels = score([dict(row) for row in rows])
        labels = fresh_labels
        if known is not None:
            known.add([str(rows[i][examples.ROW_HASH]) for i in missing], fresh, labels)
        for i, values in zip(missing, fresh, strict=True):
            cached[str(rows[i][examples.ROW_HASH])] = values
    if not rows:
        return np.zeros((0, len(labels)), dtype=np.float32), labels, 0
    out = np.stack([cached[str(row[examples.ROW_HASH])] for row in rows]).astype(np.float32)
    return out, labels, len(missing)
