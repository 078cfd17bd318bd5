"""`mixatlas demo`: the whole pipeline offline on a synthetic corpus, resumable stage by stage.

corpus (synthetic) -> atlas (`pixels` embedder) -> the paper's per-axis searches (task axis, concept axis)
with gp-ucb and the regmix / random / uniform baselines at one equal budget, plus a joint gp-ucb search ->
recipe -> materialized llava manifest -> HTML report. Every stage leaves its output in OUT and is skipped
when that output is already complete, so re-running after an interruption continues where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.cli.console import console

AXIS_METHODS = ("gp-ucb", "regmix", "random", "uniform")
TARGET = "avg/nll"
STAGES = 6


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run (the full default and `--quick` differ only here)."""

    corpus_samples: int
    k: int
    budget: int  # proxy runs per study, equal for every method
    joint_budget: int
    manifest_samples: int  # the planned run's length: the epoch cap w * N <= count * max_epochs uses it
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields
    eval_per_benchmark: int = 40
    max_epochs: float = 4.0
    parallel: int = 2
    seed: int = 0


FULL = DemoPlan(
    corpus_samples=1500, k=6, budget=10, joint_budget=10,
    proxy={"steps": 30, "batch_size": 8, "warmup_steps": 3, "eval_samples": 16, "eval_generate": False,
           "max_len": 64, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 384, "lm_hidden": 64,
                                                      "vision_hidden": 32, "vision_layers": 1}},
    manifest_samples=1500,
)
QUICK = DemoPlan(
    corpus_samples=400, k=3, budget=3, joint_budget=3,
    proxy={"steps": 6, "batch_size": 4, "warmup_steps": 1, "eval_samples": 8, "eval_generate": False,
           "max_len": 64, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 300,
                                                      "lm_hidden": 32, "vision_hidden": 32,
                                                      "lm_layers": 1, "vision_layers": 1}},
    manifest_samples=400, eval_per_benchmark=12,
)


@dataclass(frozen=True)
class DemoOutputs:
    """Where the demo left its artifacts."""

    corpus: Path
    atlas: Path
    studies: list[Path]
    recipe: Path
    manifest: Path
    report: Path


def study_path(out: Path, axis: str, method: str) -> Path:
    return out / "studies" / f"{axis}-{method}" / "study.db"


def run_demo(out: Path, quick: bool = False, plan: DemoPlan | None = None) -> DemoOutputs:
    """Run (or resume) the demo in folder `out`; returns the artifact paths. See the module docstring."""
    plan = plan or (QUICK if quick else FULL)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Each of the `parallel` proxy workers gets its share of the cores (the workers inherit the variable).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.parallel)))
    started = time.monotonic()
    console.rule(f"MixAtlas demo{' (quick)' if quick else ''} -> {out}")

    with _stage(1, f"synthetic corpus ({plan.corpus_samples} samples)"):
        corpus = _corpus(out, plan)
    with _stage(2, f"atlas: pixels embedder, k={plan.k}"):
        atlas = _atlas(out, corpus, plan)
    runs = _study_runs(plan)
    with _stage(3, f"searches: {len(runs)} studies, {sum(b for *_, b in runs)} proxy runs, "
                   f"{plan.parallel} in parallel"):
        studies = _searches(out, atlas, plan, runs)
    with _stage(4, "recipe: one per gp-ucb study, the best one is recipe.yaml"):
        recipe, per_axis = _recipe(out, studies)
    with _stage(5, f"materialize {plan.manifest_samples} samples (llava manifest)"):
        manifest = _materialize(out, atlas, recipe, plan)
    with _stage(6, "report"):
        report = _report(out, studies, atlas, recipe)
    _summary(recipe, per_axis, studies, manifest, report, time.monotonic() - started)
    return DemoOutputs(corpus, atlas.dir, studies, recipe, manifest, report)


@contextmanager
def _stage(number: int, title: str) -> Iterator[None]:
    console.print(f"[bold][{number}/{STAGES}][/] {title}")
    started = time.monotonic()
    yield
    console.print(f"      [dim]{time.monotonic() - started:.0f} s[/]")


def _study_runs(plan: DemoPlan) -> list[tuple[str, str, int]]:
    """(axis, method, budget) of every study: 4 methods on each paper axis, then gp-ucb on the joint one."""
    runs = [(axis, method, plan.budget) for axis in ("task", "concept") for method in AXIS_METHODS]
    return [*runs, ("joint", "gp-ucb", plan.joint_budget)]


def _corpus(out: Path, plan: DemoPlan) -> Path:
    from mixatlas.cli.console import progress
    from mixatlas.corpus.synth import BENCHMARKS, synthesize

    corpus = out / "corpus"
    if (corpus / "synth.json").is_file():  # written last by `synthesize`
        console.print("  done already")
        return corpus
    total = plan.corpus_samples + plan.eval_per_benchmark * len(BENCHMARKS)
    with progress(transient=True) as bar:
        task = bar.add_task("rendering images", total=total)
        synthesize(corpus, samples=plan.corpus_samples, seed=plan.seed,
                   eval_per_benchmark=plan.eval_per_benchmark, workers=plan.parallel,
                   progress=lambda n: bar.advance(task, n))
    return corpus


def _atlas(out: Path, corpus: Path, plan: DemoPlan) -> Any:
    from mixatlas.atlas import Atlas, build_atlas

    folder = out / "atlas"
    if (folder / "atlas.json").is_file():
        console.print("  done already")
        return Atlas.load(folder)
    return build_atlas(corpus, folder, embedder="pixels", k=plan.k, seed=plan.seed, workers=plan.parallel)


def _searches(out: Path, atlas: Any, plan: DemoPlan, runs: list[tuple[str, str, int]]) -> list[Path]:
    """The per-axis studies (4 methods x task/concept) and the joint gp-ucb study, run or resumed."""
    from mixatlas.executors import make_executor
    from mixatlas.objectives.base import Target
    from mixatlas.objectives.registry import build_objective
    from mixatlas.search.loop import run_search
    from mixatlas.search.study import Study
    from mixatlas.space import MixtureSpace

    spec = {"kind": "proxy", "config": plan.proxy, "atlas": str(atlas.dir)}
    objective = build_objective(spec)
    meta = {"atlas": str(atlas.dir), "atlas_fingerprint": atlas.fingerprint,
            "centroids_fingerprint": atlas.centroids_fingerprint, "demo": True}
    paths = []
    with make_executor("local", parallel=plan.parallel, folder=out / "studies") as executor:
        for axis, method, budget in runs:
            path = study_path(out, axis, method)
            paths.append(path)
            if path.exists():
                study = Study.open(path)
            else:
                space = MixtureSpace.from_atlas(atlas, mode=axis, planned_samples=plan.manifest_samples,
                                                max_epochs=plan.max_epochs)
                study = Study.create(path, space=space, objective_spec=spec,
                                     target=Target.parse(TARGET, minimize=True), method=method,
                                     budget=budget, seed=plan.seed, meta=meta)
            try:
                if study.count("done") >= study.budget:
                    console.print(f"  {axis}-{method}: done already")
                    continue
                console.print(f"  {axis} axis, {method}: {study.budget} proxy runs")
                run_search(study, objective, executor, parallel=plan.parallel)
            finally:
                study.close()
    return paths


def _recipe(out: Path, studies: list[Path]) -> tuple[Path, dict[str, Any]]:
    """One recipe per gp-ucb study (baselines: the same axis's other methods; for the joint search every
    per-axis baseline); the best by its score (observed, else predicted) becomes recipe.yaml."""
    from mixatlas.recipe import Recipe, recipe_from_study

    final = out / "recipe.yaml"
    per_axis: dict[str, Any] = {}
    made = False
    for path in studies:
        axis, method = path.parent.name.split("-", 1)
        if method != "gp-ucb":
            continue
        target = out / "recipes" / f"{axis}.yaml"
        if target.is_file():
            per_axis[axis] = Recipe.load(target)
            continue
        baselines = [p for p in studies if p.parent.name.split("-", 1)[0] == axis and p != path]
        per_axis[axis] = recipe_from_study(path, baselines=baselines or [
            p for p in studies if not p.parent.name.endswith("gp-ucb")])
        per_axis[axis].save(target)
        made = True
    if made or not final.is_file():
        best_axis = min(per_axis, key=lambda a: per_axis[a].score()[0])
        per_axis[best_axis].save(final)
    else:
        console.print("  done already")
    return final, per_axis


def _materialize(out: Path, atlas: Any, recipe: Path, plan: DemoPlan) -> Path:
    from mixatlas.recipe import Recipe, materialize

    folder = out / "manifest"
    if (folder / "materialize.json").is_file():
        console.print("  done already")
    else:
        materialize(atlas, Recipe.load(recipe, atlas=atlas), plan.manifest_samples, folder, format="llava",
                    seed=plan.seed)
    return folder / "manifest.jsonl"


def _report(out: Path, studies: list[Path], atlas: Any, recipe: Path) -> Path:
    from mixatlas.report import build_report

    index = out / "report" / "index.html"
    if index.is_file() and index.stat().st_mtime >= recipe.stat().st_mtime:
        console.print("  done already")
        return index
    return build_report(studies, out / "report", atlas=atlas.dir, recipe=recipe)


def seed_noise_sd(studies: list[Path]) -> float | None:
    """Pooled sd of the target over the uniform studies' trials: the same mixture at different seeds."""
    from mixatlas.search.study import Study

    sum_sq, dof = 0.0, 0
    for path in studies:
        if not path.parent.name.endswith("-uniform"):
            continue
        study = Study.open(path)
        try:
            values = np.array([t.value for t in study.trials("done")])
        finally:
            study.close()
        if len(values) > 1:
            sum_sq += float(((values - values.mean()) ** 2).sum())
            dof += len(values) - 1
    return (sum_sq / dof) ** 0.5 if dof else None


def _gain_row(recipe: Any, noise: float | None) -> tuple[str, str, str] | None:
    """(recipe score, best baseline, gain ± sd) cells; the sd adds the seed noise of each observed value
    and the GP sd of a predicted one."""
    score, gain = recipe.score(), recipe.gain_over_best_baseline()
    if score is None or gain is None:
        return None
    delta, gp_sd, baseline = gain
    own_var = (noise or 0.0) ** 2 if recipe.observation is not None else (gp_sd or 0.0) ** 2
    sd = (own_var + (noise or 0.0) ** 2) ** 0.5
    return (f"{score[0]:.4f}", f"{baseline.value:.4f} ({baseline.method}, {baseline.mode})",
            f"{delta:+.4f} ± {sd:.4f}")


def _summary(recipe_path: Path, per_axis: dict[str, Any], studies: list[Path], manifest: Path,
             report: Path, elapsed_s: float) -> None:
    """The last lines: the recipe, gp-ucb against the best baseline per axis, and where things are."""
    from rich.table import Table

    from mixatlas.recipe import Recipe

    recipe = Recipe.load(recipe_path)
    noise = seed_noise_sd(studies)
    console.rule("what the demo found")
    recipe.show(console)
    noise_txt = "" if noise is None else f"; seed noise sd {noise:.4f} from the uniform replicates"
    table = Table(title=f"gp-ucb vs. the best baseline at equal budget ({TARGET}, lower is better; gain > 0 "
                        f"= gp-ucb better{noise_txt})", title_justify="left")
    for col in ("axis", "gp-ucb recipe", "best baseline", "gain ± sd"):
        table.add_column(col)
    for axis, r in per_axis.items():
        row = _gain_row(r, noise)
        if row is not None:
            table.add_row(axis, *row)
    console.print(table)
    console.print(f"finished in {elapsed_s / 60:.1f} min")
    console.print(f"recipe:   {recipe_path} (from the {recipe.provenance.get('mode')} axis)", soft_wrap=True)
    console.print(f"manifest: {manifest}", soft_wrap=True)
    console.print(f"report:   [bold]{report}[/]", soft_wrap=True)
