"""`mixatlas demo --quick` end to end: artifacts, last lines, a report that renders, and a resumed rerun."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mixatlas.atlas import Atlas
from mixatlas.demo import QUICK, TARGET
from mixatlas.objectives.base import Target
from mixatlas.recipe import Recipe, largest_remainder_counts

CLI = [sys.executable, "-c", "from mixatlas.cli import main; main()"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    run = subprocess.run([*CLI, "demo", "--out", str(out), "--quick"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return out, run.stderr


def test_demo_leaves_recipe_manifest_and_report(demo: tuple[Path, str]) -> None:
    out, log = demo
    atlas = Atlas.load(out / "atlas")
    recipe = Recipe.load(out / "recipe.yaml", atlas=atlas)  # made on the demo's own atlas
    assert recipe.provenance["method"] == "gp-ucb" and recipe.target.spec == Target.parse(TARGET).spec
    assert {b.method for b in recipe.baselines} >= {"regmix", "random", "uniform"}
    rows = [json.loads(line) for line in (out / "manifest" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == QUICK.manifest_samples
    need = largest_remainder_counts(recipe.weights_kt, QUICK.manifest_samples)
    got = Counter((r["concept"], r["task"]) for r in rows)
    for i, concept in enumerate(atlas.concepts):
        for j, task in enumerate(atlas.tasks):
            assert got[(concept, task)] == need[i, j]
    html = (out / "report" / "index.html").read_text()
    images = set(re.findall(r"<img src='([^']+)'", html))
    assert {"recipe_heatmap.png", "best_so_far.png", "loss_curves.png", "exemplars.png"} <= images
    assert len([i for i in images if i.startswith("posterior_")]) == 3  # task, concept and joint gp-ucb
    studies = sorted(p.name for p in (out / "studies").iterdir() if p.is_dir())
    assert len(studies) == 9 and "joint-gp-ucb" in studies
    # the last lines say what was found (gain over the best baseline per axis) and where the report is
    tail = log.strip().splitlines()[-14:]
    assert any("gain of gp-ucb over the best baseline" in line for line in tail)
    for axis, baseline_axis in (("task", "task"), ("concept", "concept"), ("joint", r"\w+")):
        row = re.compile(rf"│ {axis} +│ {baseline_axis}-[\w-]+ +│ [+-][\d.]+")
        assert any(row.search(line) for line in tail), axis
    assert tail[-1].startswith("report:") and tail[-1].endswith(str(out / "report" / "index.html"))
    final = json.loads((out / "final_eval.json").read_text())
    assert len(final) == 9 and all(len(v) == QUICK.final_seeds for v in final.values())
    np.testing.assert_allclose(recipe.weights_kt.sum(), 1.0)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no chromium")
def test_demo_report_renders(demo: tuple[Path, str]) -> None:
    from test_report import check_page_in_chromium

    out, _ = demo
    assert check_page_in_chromium(out / "report" / "index.html") >= 7


def test_rerun_skips_finished_stages(demo: tuple[Path, str]) -> None:
    out, _ = demo
    manifest = out / "manifest" / "manifest.jsonl"
    before = manifest.stat().st_mtime_ns
    run = subprocess.run([*CLI, "demo", "--out", str(out), "--quick"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    # corpus, atlas, 9 studies, final evaluation, recipe, manifest, report
    assert run.stderr.count("done already") == 15
    assert manifest.stat().st_mtime_ns == before
