"""The HTML report: built from finished studies, opened in headless Chromium, every image loads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mixatlas.executors import make_executor
from mixatlas.objectives.base import Result, Target
from mixatlas.objectives.callable import CallableObjective
from mixatlas.report import build_report
from mixatlas.report.html import _vary_marginal
from mixatlas.search.loop import run_search
from mixatlas.search.study import Study
from mixatlas.space import Mixture, MixtureSpace

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")
CHROMIUM = "/usr/bin/chromium"


def decaying_loss(mixture: Mixture) -> Result:
    """A loss curve decaying towards a floor that is lowest for OCR-heavy mixtures."""
    w = mixture.weights_kt
    floor = 1.0 + 2.0 * (w[:, 1].sum() - 0.6) ** 2 + 0.3 * (w[0].sum() - 0.5) ** 2
    steps = np.arange(0, 60, 5, dtype=float)
    curve = floor + 2.0 * np.exp(-steps / 15.0)
    return Result(metrics={"avg/nll": float(curve[-1])}, curve=np.stack([steps, curve], axis=1).tolist())


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """gp-ucb, random and uniform studies on the task axis of a 2 x 5 atlas."""
    root = tmp_path_factory.mktemp("report-studies")
    space = MixtureSpace(("photos", "charts"), TASKS, np.arange(10.0, 20.0).reshape(2, 5), mode="task")
    paths = []
    with make_executor("local", parallel=1, folder=root) as executor:
        for method in ("gp-ucb", "random", "uniform"):
            path = root / f"task-{method}" / "study.db"
            study = Study.create(
                path,
                space=space,
                objective_spec={"kind": "callable"},
                target=Target.parse("avg/nll", True),
                method=method,
                budget=5,
                seed=0,
                method_options={"n_pool": 500, "n_polish": 1} if method == "gp-ucb" else None,
            )
            run_search(study, CallableObjective(decaying_loss), executor, progress=False)
            study.close()
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def report_index(studies: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(studies, tmp_path_factory.mktemp("report"))


def check_page_in_chromium(index: Path) -> int:
    """Open `index` in headless Chromium; assert every <img> decoded and no console error; return #imgs."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ],
        )
        try:
            page = browser.new_page()
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(index.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "xs => xs.map(i => i.complete ? i.naturalWidth : 0)")
        finally:
            browser.close()
    assert widths and all(w > 0 for w in widths), widths
    assert errors == []
    return len(widths)


def test_vary_marginal_keeps_ratios() -> None:
    w = np.array([[0.1, 0.2, 0.0], [0.3, 0.1, 0.3]])
    counts = np.ones_like(w)
    moved = _vary_marginal(w, counts, "task", 1, 0.5)
    assert moved.sum() == pytest.approx(1.0) and moved[:, 1].sum() == pytest.approx(0.5)
    np.testing.assert_allclose(moved[:, 1] / moved[:, 1].sum(), [2 / 3, 1 / 3])  # inner split kept
    np.testing.assert_allclose(moved[:, [0, 2]] / moved[:, [0, 2]].sum(), w[:, [0, 2]] / w[:, [0, 2]].sum())
    rows = _vary_marginal(w, counts, "concept", 0, 1.0)
    np.testing.assert_allclose(rows[1], 0.0)
    np.testing.assert_allclose(rows[0], [1 / 3, 2 / 3, 0.0])


def test_report_files_and_content(report_index: Path) -> None:
    html = report_index.read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert {"recipe_heatmap.png", "best_so_far.png", "loss_curves.png", "posterior_0.png"} <= set(images)
    for name in images:
        assert (report_index.parent / name).stat().st_size > 1000
    assert "http" not in html.lower()  # offline: no CDN, no remote anything
    assert "Steps to the uniform mixture" in html  # steps-to-loss table against the uniform study
    assert html.count("<details>") == 3  # one trial table per study
    for method in ("gp-ucb", "random", "uniform"):
        assert f"task-{method}: {method}, task axis, 5/5 finished" in html


@pytest.mark.skipif(shutil.which("chromium") is None and not Path(CHROMIUM).exists(), reason="no chromium")
def test_report_renders_in_headless_chromium(report_index: Path) -> None:
    assert check_page_in_chromium(report_index) >= 4
