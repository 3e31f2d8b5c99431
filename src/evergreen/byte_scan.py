"""Positions of given bytes in a large buffer, found by numpy a slice at a time.

``np.flatnonzero(data == b)`` over a buffer of megabytes makes a boolean temporary as large as
the buffer; freshly mapped by the allocator for each batch, its pages are faulted in one by
one, which cost ingest more than the comparison itself (measured: finding JSON's special
characters in a batch's text took four times longer inside ingest than in a loop over the
same arrays). Slices of 256 KiB keep every temporary small enough to be reused from the heap.
"""

from __future__ import annotations

import numpy as np

_SLICE = 1 << 18


def positions(data: np.ndarray, values: tuple[int, ...], below: int = 0) -> np.ndarray:
    """The indexes (int64, ascending) of the bytes of ``data`` (a uint8 array) that equal
    one of ``values`` or are less than ``below``."""
    found = []
    for start in range(0, len(data), _SLICE):
        part = data[start : start + _SLICE]
        hits = part < below if below else part == values[0]
        for value in values[0 if below else 1 :]:
            hits |= part == value
        found.append(np.flatnonzero(hits) + start)
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)
