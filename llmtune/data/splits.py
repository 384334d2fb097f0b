"""Carve a validation split off training data: random, or stratified by label (pure functions)."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence


def validation_size(n_rows: int, fraction: float) -> int:
    """Rows to carve for validation: ``round(n_rows * fraction)``, at least 1 (0 for no rows)."""
    if n_rows == 0:
        return 0
    return max(1, round(n_rows * fraction))


def random_split_indices(n_rows: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n_rows)`` into (train, validation) index lists, each in ascending order.

    Args:
        n_rows: Number of rows.
        fraction: Share of rows for validation, 0 < fraction < 1.
        seed: Seed of the shuffle (same seed, same split).
    """
    assert 0 < fraction < 1, fraction
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    n_val = validation_size(n_rows, fraction)
    return sorted(order[n_val:]), sorted(order[:n_val])


def stratified_split_indices(labels: Sequence[Hashable], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split row indices into (train, validation) keeping the label mix of both close to the whole.

    Every class keeps at least one row in train, and every class with at least two rows puts at least
    one row in validation, so both splits see every class they can. Beyond that, rows are shared out by
    largest remainder so the validation size is about ``fraction`` of all rows (the per-class
    guarantees win when they conflict with it).

    Args:
        labels: One hashable label per row.
        fraction: Share of rows for validation, 0 < fraction < 1.
        seed: Seed of the per-class shuffles (same seed, same split).

    Returns:
        Train and validation indices into ``labels``, each in ascending order.
    """
    assert 0 < fraction < 1, fraction
    by_class: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    quotas = _class_quotas([len(rows) for rows in by_class.values()], fraction)
    rng = random.Random(seed)
    train: list[int] = []
    validation: list[int] = []
    for rows, quota in zip(by_class.values(), quotas, strict=True):
        rows = list(rows)
        rng.shuffle(rows)
        validation.extend(rows[:quota])
        train.extend(rows[quota:])
    return sorted(train), sorted(validation)


def _class_quotas(counts: list[int], fraction: float) -> list[int]:
    """Validation rows per class: largest-remainder shares of the total, then clamped per class."""
    target = round(sum(counts) * fraction)
    exact = [count * fraction for count in counts]
    quotas = [math.floor(value) for value in exact]
    # Hand the rows lost to flooring to the classes with the largest remainders (ties: bigger class).
    by_remainder = sorted(range(len(counts)), key=lambda i: (exact[i] - quotas[i], counts[i]), reverse=True)
    for i in by_remainder[: max(0, target - sum(quotas))]:
        quotas[i] += 1
    return [min(max(quota, 1), count - 1) if count >= 2 else 0 for quota, count in zip(quotas, counts, strict=True)]
