"""Sampled request logging for skew checks against the training data.

Each sampled *row* becomes one JSON line in ``<folder>/<model>/<YYYY-MM-DD>.jsonl`` (UTC date)::

    {"ts": "2026-11-25T15:00:00.123456+00:00", "model": "reviews", "version": 3,
     "signature": "serving_default", "inputs": {"text": "Great coffee"}}

``folder`` is ``<pipeline root>/serving/requests`` with a config, or ``--request-log DIR``. An
input's value is the row's JSON value as decoded against the signature: strings as text,
bytes that are not UTF-8 as ``{"b64": ...}``, numbers as numbers. Writing happens in a
background thread, so a slow disk never delays a response.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import random
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from evergreen.serving.codec import row_values

_STOP = object()


class RequestLog:
    """Writes a random ``sample_rate`` share of served rows.

    Args:
        folder: the root of the request log.
        sample_rate: probability that a row is written, 0 to 1.
        seed: for the sampler; default None (random).
    """

    def __init__(self, folder: Path, sample_rate: float, seed: int | None = None) -> None:
        self.folder = Path(folder)
        self.sample_rate = sample_rate
        self._random = random.Random(seed)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="request-log", daemon=True)
        self._thread.start()

    def sample(
        self, model: str, version: int, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> int:
        """Queue the sampled rows of one request; returns how many were sampled."""
        if self.sample_rate <= 0:
            return 0
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        picked = [i for i in range(rows) if self._random.random() < self.sample_rate]
        now = dt.datetime.now(dt.UTC)
        for i in picked:
            record = {
                "ts": now.isoformat(),
                "model": model,
                "version": version,
                "signature": signature,
                "inputs": row_values(inputs, i),
            }
            self._queue.put((model, now.date().isoformat(), record))
        return len(picked)

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _write(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while True:  # drain what is queued: one open() per burst, not per row
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._flush(batch)
                    return
                batch.append(more)
            self._flush(batch)

    def _flush(self, batch: list[object]) -> None:
        by_file: dict[Path, list[str]] = {}
        for model, day, record in batch:  # type: ignore[misc]
            path = self.folder / model / f"{day}.jsonl"
            by_file.setdefault(path, []).append(json.dumps(record, ensure_ascii=False) + "\n")
        for path, lines in by_file.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as f:
                    f.writelines(lines)
            except OSError as e:  # a full or read-only disk loses samples, never the writer
                logging.getLogger("evergreen.serving").error(
                    "request log: %d row(s) not written to %s: %s", len(lines), path, e
                )
