"""Per-device state of the multi-device banks: arrays with one row (axis 0) per device."""

from __future__ import annotations

import numpy as np


def grown(a: np.ndarray, capacity: int, fill: float | int | bool) -> np.ndarray:
    """`a` with `capacity` rows: the old rows first, new rows filled with `fill`. Zero-filled
    rows are left to the allocator's zeroed pages, so they use no memory until written (a
    `np.full` of a ring bank wrote, and so kept resident, every page of its spare rows)."""
    out = np.zeros((capacity, *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    if fill:
        out[len(a) :] = fill
    return out


class Stacked:
    """Base of a bank whose state is the arrays named in `STATE` (attribute name and the fill of a
    new device's row). Devices are rows 0, 1, ...; the arrays grow to take any row an update names.
    """

    STATE: tuple[tuple[str, float | int | bool], ...] = ()

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def fit(self, rows: np.ndarray) -> None:
        """Make room for every row in `rows`."""
        if len(rows) and int(rows.max()) >= self.capacity:
            capacity = max(2 * self.capacity, int(rows.max()) + 1)
            for name, fill in self.STATE:
                setattr(self, name, grown(getattr(self, name), capacity, fill))
            self.capacity = capacity
