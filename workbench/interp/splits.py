"""Train, validation and test splits of a labeled set, by row (stratified) or by whole group.

    train, val, test = split_indices(labels, groups, "group", test_fraction=0.25, val_fraction=0.2)

Used by `workbench.interp.probes.train_probes`: the layer is chosen on validation and reported
on test, so the three never share a row (or, with "group", a group).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..core.errors import InputError


def split_indices(
    labels: Sequence[int],
    groups: Sequence[str] | None = None,
    method: str = "random",
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[int], list[int], list[int]]:
    """Train, validation and test row indices (sorted, disjoint).

    random: every (label, group) stratum gives `test_fraction` of its rows to the test set
    and `val_fraction` to the validation set.
    group: groups are shuffled; whole groups go to the test set until it holds about
    `test_fraction` of the rows, then to the validation set until it holds about
    `val_fraction`; at least one group is left for training (needs `groups`, >= 3 groups).
    """
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and test_fraction + val_fraction < 1):
        raise InputError(
            f"test and validation fractions must be in (0, 1) and sum below 1, not "
            f"{test_fraction} and {val_fraction}"
        )
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    if method == "random":
        strata: dict[tuple, list[int]] = {}
        for i in range(n):
            strata.setdefault((labels[i], groups[i] if groups else None), []).append(i)
        test, val = [], []
        for rows in strata.values():
            perm = [rows[j] for j in torch.randperm(len(rows), generator=generator).tolist()]
            n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
            test += perm[:n_test]
            val += perm[n_test : n_test + n_val]
    elif method == "group":
        if not groups:
            raise InputError("a group split needs a group for every text")
        names = sorted(set(groups))
        if len(names) < 3:
            raise InputError(
                f"a group split needs at least three groups (train, validation, test), "
                f"not {len(names)}"
            )
        sizes = {name: sum(1 for g in groups if g == name) for name in names}
        order = [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]
        test_groups = _take_groups(order, sizes, test_fraction * n, keep=2)
        val_groups = _take_groups(
            [g for g in order if g not in test_groups], sizes, val_fraction * n, keep=1
        )
        test = [i for i in range(n) if groups[i] in test_groups]
        val = [i for i in range(n) if groups[i] in val_groups]
    else:
        raise InputError(f"split must be 'random' or 'group', not {method!r}")
    held = set(test) | set(val)
    return [i for i in range(n) if i not in held], sorted(val), sorted(test)


def _take_groups(order: list[str], sizes: dict[str, int], target: float, keep: int) -> set[str]:
    """Groups from the front of `order` until their rows reach `target`, leaving `keep` groups."""
    taken, count = set(), 0
    for name in order:
        if count >= target or len(taken) >= len(order) - keep:
            break
        taken.add(name)
        count += sizes[name]
    return taken
