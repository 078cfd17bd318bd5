"""Rank agreement between the fidelities of a multi-fidelity table (or finished multi-fidelity search).

For every fidelity against the target one, on the mixtures evaluated at both: Spearman and Kendall rank
correlations of the target metric with paired-bootstrap 95% percentile intervals, and where the
fidelity's best mixture ranks at the target fidelity (1 = best). This is the number that says whether a
cheap fidelity may stand in for the expensive one, and it is what the multi-fidelity GP learns as the
task correlation.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError


def fidelity_agreement(
    values_cf: np.ndarray, names: list[str], target: str, bootstrap: int = 2000, seed: int = 0
) -> list[dict]:
    """One row per fidelity other than `target`, comparing it with `target`.

    Args:
        values_cf: (c, F) utility (larger is better) of mixture c at fidelity f, NaN where not evaluated.
        names: the F fidelity names; `target` is one of them.
    Returns:
        [{"fidelity", "n", "spearman", "spearman_ci", "kendall", "kendall_ci", "best_rank_at_target"}]
        (None correlations where fewer than 3 mixtures are shared).
    """
    from scipy.stats import kendalltau, spearmanr

    if target not in names:
        raise MixAtlasError(f"target fidelity {target!r} is not one of {', '.join(names)}")
    values = np.asarray(values_cf, dtype=np.float64)
    t = names.index(target)
    rng = np.random.default_rng(seed)
    rows = []
    for f, name in enumerate(names):
        if f == t:
            continue
        both = np.isfinite(values[:, f]) & np.isfinite(values[:, t])
        low, high = values[both, f], values[both, t]
        row: dict = {
            "fidelity": name,
            "n": int(both.sum()),
            "spearman": None,
            "spearman_ci": None,
            "kendall": None,
            "kendall_ci": None,
            "best_rank_at_target": None,
        }
        if len(low) >= 3 and np.ptp(low) > 0 and np.ptp(high) > 0:
            row["spearman"] = float(spearmanr(low, high).statistic)
            row["kendall"] = float(kendalltau(low, high).statistic)
            draws = []
            for _ in range(bootstrap):
                idx = rng.integers(0, len(low), len(low))
                if np.ptp(low[idx]) > 0 and np.ptp(high[idx]) > 0:
                    draws.append(
                        (spearmanr(low[idx], high[idx]).statistic, kendalltau(low[idx], high[idx]).statistic)
                    )
            boot = np.asarray(draws)
            row["spearman_ci"] = [
                float(np.percentile(boot[:, 0], 2.5)),
                float(np.percentile(boot[:, 0], 97.5)),
            ]
            row["kendall_ci"] = [
                float(np.percentile(boot[:, 1], 2.5)),
                float(np.percentile(boot[:, 1], 97.5)),
            ]
            row["best_rank_at_target"] = int(np.sum(high > high[int(np.argmax(low))])) + 1
        rows.append(row)
    return rows


def table_agreement(
    csv_path: Path,
    weight_cols: str,
    fidelity_col: str,
    target: str,
    target_fidelity: str,
    minimize: bool,
    bootstrap: int = 2000,
) -> dict:
    """`fidelity_agreement` of a fidelity pool CSV (one row per mixture x fidelity, as `bench pool
    --fidelity-col` reads). Returns {"target", "target_fidelity", "minimize", "rows": [...]}."""
    from mixatlas.objectives.base import Target
    from mixatlas.search.fidelity_benchmark import FidelityPool
    from mixatlas.search.multifidelity import Fidelities

    try:
        with Path(csv_path).open(newline="") as handle:
            names = list(dict.fromkeys(row.get(fidelity_col, "").strip() for row in csv.DictReader(handle)))
    except OSError as exc:
        raise MixAtlasError(f"{csv_path}: cannot read ({exc})") from None
    fidelities = Fidelities(tuple(names), tuple(1.0 for _ in names), target_fidelity)
    pool = FidelityPool.from_csv(csv_path, weight_cols, fidelity_col, fidelities)
    utility = pool.utility(Target.parse(target, minimize=minimize))
    rows = fidelity_agreement(utility, names, target_fidelity, bootstrap=bootstrap)
    return {"target": target, "target_fidelity": target_fidelity, "minimize": minimize, "rows": rows}


def study_agreement(study_path: Path, target: str | None = None, bootstrap: int = 2000) -> dict:
    """`fidelity_agreement` of a finished multi-fidelity study: every mixture it evaluated (replicates at
    one fidelity averaged), at each fidelity it ran; the study's target (or `target`, scored on the trials'
    metrics in the study's direction). Returns the `table_agreement` shape plus "study"."""
    from mixatlas.search.study import Study, TrialState

    study = Study.open(Path(study_path), read_only=True)
    try:
        fidelities = study.fidelities
        if fidelities is None:
            raise MixAtlasError(
                f"{study_path}: a single-fidelity study; rank agreement needs a study searched with "
                "--fidelities (or a CSV of runs at several fidelities)"
            )
        chosen = study.target if target is None else study.target.retarget(target)
        keys: dict[bytes, int] = {}
        sums: dict[tuple[int, int], list[float]] = {}
        for trial in study.trials(TrialState.DONE):
            row = keys.setdefault(np.asarray(trial.params, dtype=np.float64).round(12).tobytes(), len(keys))
            sums.setdefault((row, fidelities.index(trial.fidelity)), []).append(
                chosen.utility(trial.metrics or {})
            )
        values = np.full((len(keys), len(fidelities.names)), np.nan)
        for (row, f), utilities in sums.items():
            values[row, f] = float(np.mean(utilities))
        rows = fidelity_agreement(values, list(fidelities.names), fidelities.target, bootstrap=bootstrap)
        return {"study": str(study_path), "target": chosen.spec, "target_fidelity": fidelities.target,
                "minimize": chosen.minimize, "rows": rows}
    finally:
        study.close()
