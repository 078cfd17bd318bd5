"""`analyze fidelities`: rank agreement between the fidelities of a table."""

from __future__ import annotations

import numpy as np
import pytest

from mixatlas.analyze.fidelity import fidelity_agreement, table_agreement
from mixatlas.errors import MixAtlasError


def test_agreement_tracks_the_known_ordering() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=40)
    values = np.stack([truth + 2.0 * rng.normal(size=40), truth + 0.1 * rng.normal(size=40), truth], axis=1)
    values[:5, 0] = np.nan  # five mixtures never ran at the cheapest fidelity
    rows = fidelity_agreement(values, ["tiny", "big", "target"], "target", bootstrap=200)
    tiny, big = rows
    assert tiny["n"] == 35 and big["n"] == 40
    assert big["spearman"] > 0.95 > tiny["spearman"] > 0.0
    assert big["spearman_ci"][0] <= big["spearman"] <= big["spearman_ci"][1]
    assert big["best_rank_at_target"] <= 2
    with pytest.raises(MixAtlasError, match="target fidelity"):
        fidelity_agreement(values, ["a", "b", "c"], "d")


def test_table_agreement_reads_a_fidelity_csv(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    lines = ["w_a,w_b,size,loss"]
    for i, a in enumerate(np.linspace(0.1, 0.9, 6)):
        lines += [
            f"{a:.3f},{1 - a:.3f},small,{(a - 0.3) ** 2 + 0.01 * i:.4f}",
            f"{a:.3f},{1 - a:.3f},large,{(a - 0.3) ** 2:.4f}",
        ]
    path.write_text("\n".join(lines) + "\n")
    report = table_agreement(path, "w_", "size", "loss", "large", minimize=True, bootstrap=100)
    [row] = report["rows"]
    assert row["fidelity"] == "small" and row["n"] == 6 and row["spearman"] == pytest.approx(1.0)
    assert row["best_rank_at_target"] == 1
