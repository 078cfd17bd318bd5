"""`mixatlas analyze transfer` and `steps-to-loss` on small hand-made tables and curves."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mixatlas.analyze.steps import smooth_curve, steps_to_loss
from mixatlas.analyze.transfer import rank_transfer
from mixatlas.cli import app
from mixatlas.objectives.base import Result


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in row) for row in rows]) + "\n")
    return path


@pytest.fixture
def scale_tables(tmp_path):
    # 10 mixtures; the large scale orders them like the small one except that m8 and m9 swap.
    small_rows = [(f"m{i}", 3.0 - 0.1 * i) for i in range(10)]
    small = write_csv(tmp_path / "small.csv", ["mixture", "avg/nll"], small_rows)
    large_rows = [(f"m{i}", 2.0 - 0.05 * i) for i in range(10)]
    large_rows[8], large_rows[9] = ("m8", 2.0 - 0.05 * 9), ("m9", 2.0 - 0.05 * 8)
    large = write_csv(tmp_path / "large.csv", ["mixture", "avg/nll"], list(reversed(large_rows)))
    return small, large


def test_rank_transfer_hand_table(scale_tables):
    small, large = scale_tables
    report = rank_transfer(small, large, "avg/nll", bootstrap=200, seed=0)
    assert report["minimize"] is True and report["n"] == 10
    # One adjacent swap among 10: Spearman = 1 - 6*2/(10*99), Kendall = 1 - 2*1/45.
    assert report["spearman"] == pytest.approx(1 - 12 / 990)
    assert report["kendall"] == pytest.approx(1 - 2 / 45)
    low, high = report["spearman_ci"]
    assert low <= report["spearman"] <= high <= 1.0
    # The small-scale best (m9) is second at large scale: outside the top 10% (1 of 10).
    assert report["small_best"] == "m9"
    assert report["small_best_large_rank"] == 2
    assert report["small_best_in_large_top10"] is False


def test_rank_transfer_reports_missing_target(scale_tables):
    from mixatlas.errors import MixAtlasError

    small, large = scale_tables
    with pytest.raises(MixAtlasError, match="no column 'score'"):
        rank_transfer(small, large, "score", bootstrap=10)


def test_analyze_transfer_cli(scale_tables, tmp_path):
    small, large = scale_tables
    out = tmp_path / "transfer.json"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            "transfer",
            str(small),
            str(large),
            "--target",
            "avg/nll",
            "--bootstrap",
            "100",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["small_best_large_rank"] == 2


def write_run(path, losses):
    path.mkdir()
    curve = [[i + 1, v] for i, v in enumerate(losses)]
    Result(metrics={"avg/nll": 1.0}, curve=curve).save(path / "metrics.json")
    return path


def test_smooth_curve_is_debiased():
    # A constant curve stays constant (no pull toward 0 at the start).
    assert np.allclose(smooth_curve(np.full(5, 2.0), 0.9), 2.0)
    assert np.allclose(smooth_curve(np.array([3.0, 1.0]), 0.0), [3.0, 1.0])


def test_steps_to_loss_hand_curves(tmp_path):
    baseline = write_run(tmp_path / "base", np.linspace(4.0, 2.0, 100))
    fast = write_run(tmp_path / "fast", np.concatenate([np.linspace(4.0, 2.0, 50), np.full(50, 1.5)]))
    slow = write_run(tmp_path / "slow", np.linspace(4.0, 3.0, 100))
    rows = steps_to_loss([fast, slow], baseline, smoothing=0.0)
    assert rows[0]["target_loss"] == pytest.approx(2.0)
    assert rows[0]["baseline_steps"] == 100
    assert rows[0]["steps_to_loss"] == 50
    assert rows[0]["speedup"] == pytest.approx(2.0)
    assert rows[1]["steps_to_loss"] is None and rows[1]["speedup"] is None


def test_analyze_steps_cli(tmp_path):
    baseline = write_run(tmp_path / "base", np.linspace(4.0, 2.0, 40))
    fast = write_run(tmp_path / "fast", np.linspace(4.0, 1.0, 40))
    out = tmp_path / "steps.json"
    slow = write_run(tmp_path / "slow", np.linspace(4.0, 3.0, 40))
    args = ["analyze", "steps-to-loss", str(fast), str(slow), "--baseline", str(baseline), "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--smoothing", "0"])
    assert result.exit_code == 0, result.output
    fast_row, slow_row = json.loads(out.read_text())
    # the baseline ends at 2.0 after 40 steps; fast = 4 - 3 i / 39 first reaches 2.0 at i = 26, i.e. step 27
    assert (fast_row["target_loss"], fast_row["baseline_steps"], fast_row["steps_to_loss"]) == (
        pytest.approx(2.0), 40, 27)
    assert fast_row["speedup"] == pytest.approx(40 / 27)
    assert slow_row["steps_to_loss"] is None and slow_row["speedup"] is None  # never reaches 2.0
    assert "1.48" in result.output  # the table shows the speed-up
    smoothed = CliRunner().invoke(app, args)  # default EMA 0.9: a debiased smoothed curve, still faster
    assert smoothed.exit_code == 0, smoothed.output
    assert json.loads(out.read_text())[0]["speedup"] > 1.2
