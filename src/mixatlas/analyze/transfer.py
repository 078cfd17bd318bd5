"""Rank agreement between proxy-scale and target-scale results on the same mixtures.

The check the paper's reviewers asked for: do mixtures that rank well with small proxies also rank well
at the target scale? Spearman and Kendall correlations with paired-bootstrap 95% CIs, and whether the
small scale's best mixture lands in the large scale's top 10%.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target

TOP_FRACTION = 0.10


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file with a header line."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except OSError as exc:
        raise MixAtlasError(f"{path}: cannot read CSV ({exc})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def default_key_columns(
    header_a: list[str], rows_a: list[dict], header_b: list[str], target: str
) -> list[str]:
    """Columns shared by both tables, other than the target, whose values are not all numbers (ids, names)."""
    shared = [c for c in header_a if c in header_b and c != target]
    return [c for c in shared if not all(_is_number(r[c]) for r in rows_a)]


def _target_values(rows: list[dict], target: str, path: Path) -> np.ndarray:
    values = []
    for line, row in enumerate(rows, start=2):
        if target not in row:
            raise MixAtlasError(f"{path}: no column {target!r}; pass --target with one of {list(row)}")
        if not _is_number(row[target]) or not math.isfinite(float(row[target])):
            raise MixAtlasError(f"{path}:{line}: {target}={row[target]!r} is not a finite number")
        values.append(float(row[target]))
    return np.asarray(values)


def paired_values(small_csv: Path, large_csv: Path, target: str,
                  key_cols: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(small (n,), large (n,), keys): the target at both scales for the mixtures present in both files.

    Rows are matched on `key_cols` (default: shared non-numeric columns); with no key columns at all the
    files must list the same mixtures in the same order.
    """
    header_s, rows_s = read_table(small_csv)
    header_l, rows_l = read_table(large_csv)
    if not rows_s or not rows_l:
        raise MixAtlasError(f"{small_csv if not rows_s else large_csv}: the table has no rows")
    keys = key_cols if key_cols is not None else default_key_columns(header_s, rows_s, header_l, target)
    for col in keys:
        for path, header in ((small_csv, header_s), (large_csv, header_l)):
            if col not in header:
                raise MixAtlasError(f"{path}: no key column {col!r}; pass --key with shared columns")
    small, large = _target_values(rows_s, target, small_csv), _target_values(rows_l, target, large_csv)
    if not keys:
        if len(rows_s) != len(rows_l):
            raise MixAtlasError(f"{small_csv} has {len(rows_s)} rows and {large_csv} {len(rows_l)}; with no "
                                "shared id column pass --key COLUMN naming the mixture")
        return small, large, [str(i) for i in range(len(small))]
    large_of = {tuple(r[c] for c in keys): v for r, v in zip(rows_l, large, strict=True)}
    names = [tuple(r[c] for c in keys) for r in rows_s]
    both = [i for i, name in enumerate(names) if name in large_of]
    if len(both) < 3:
        raise MixAtlasError(f"{small_csv} and {large_csv} share {len(both)} mixtures on {keys}; need >= 3")
    return (small[both], np.asarray([large_of[names[i]] for i in both]),
            ["/".join(names[i]) for i in both])


def _rank_stats(small: np.ndarray, large: np.ndarray) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    return float(spearmanr(small, large).statistic), float(kendalltau(small, large).statistic)


def rank_transfer(small_csv: Path, large_csv: Path, target: str, key_cols: list[str] | None = None,
                  bootstrap: int = 2000, seed: int = 0, minimize: bool | None = None) -> dict:
    """Spearman / Kendall between scales with bootstrap 95% CIs, and the small best's rank at large scale.

    `minimize` says whether lower target is better; None infers it from the name (`Target.for_metric`:
    ending in nll, loss, ppl, perplexity or error -> minimize). CIs are percentile intervals over
    `bootstrap` paired resamples of the mixtures (resamples with a constant side, where ranks are
    undefined, are skipped).
    """
    small, large, names = paired_values(Path(small_csv), Path(large_csv), target, key_cols)
    direction = Target.for_metric(target, minimize)
    spearman, kendall = _rank_stats(small, large)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(small), len(small))
        if np.ptp(small[idx]) > 0 and np.ptp(large[idx]) > 0:
            draws.append(_rank_stats(small[idx], large[idx]))
    boot = np.asarray(draws) if draws else np.full((1, 2), np.nan)
    small_utility, large_utility = direction.to_utility(small), direction.to_utility(large)
    small_best = int(np.argmax(small_utility))
    large_rank = int(np.sum(large_utility > large_utility[small_best])) + 1  # 1 = best at large scale
    top_k = max(1, math.ceil(TOP_FRACTION * len(large)))
    return {
        "target": target,
        "minimize": direction.minimize,
        "n": len(small),
        "spearman": spearman,
        "spearman_ci": [float(np.nanpercentile(boot[:, 0], 2.5)), float(np.nanpercentile(boot[:, 0], 97.5))],
        "kendall": kendall,
        "kendall_ci": [float(np.nanpercentile(boot[:, 1], 2.5)), float(np.nanpercentile(boot[:, 1], 97.5))],
        "bootstrap": len(draws),
        "small_best": names[small_best],
        "small_best_large_rank": large_rank,
        "large_top_k": top_k,
        "small_best_in_large_top10": large_rank <= top_k,
    }
