"""`mixatlas demo`: the whole pipeline offline on a synthetic corpus, resumable stage by stage.

corpus (synthetic) -> atlas (`pixels` embedder) -> the paper's per-axis searches (task axis, concept axis)
with gp-ucb and the regmix / random / uniform baselines at one equal budget, plus a joint gp-ucb search ->
recipe -> materialized llava manifest -> HTML report. Every stage leaves its output in OUT and is skipped
when that output is already complete, so re-running after an interruption continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixatlas.cli.console import console

AXIS_METHODS = ("gp-ucb", "regmix", "random", "uniform")
TARGET = "avg/nll"


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run (the full default and `--quick` differ only here)."""

    corpus_samples: int
    k: int
    budget: int  # proxy runs per study, equal for every method
    joint_budget: int
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields
    manifest_samples: int = 20_000
    eval_per_benchmark: int = 40
    max_epochs: float = 4.0
    parallel: int = 2
    seed: int = 0


FULL = DemoPlan(
    corpus_samples=1500, k=6, budget=10, joint_budget=10,
    proxy={"steps": 30, "batch_size": 8, "warmup_steps": 3, "eval_samples": 16, "eval_generate": False,
           "max_len": 64, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 384, "lm_hidden": 64,
                                                      "vision_hidden": 32, "vision_layers": 1}},
    manifest_samples=20_000,
)
QUICK = DemoPlan(
    corpus_samples=400, k=3, budget=4, joint_budget=4,
    proxy={"steps": 6, "batch_size": 4, "warmup_steps": 1, "eval_samples": 8, "eval_generate": False,
           "max_len": 64, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 300,
                                                      "lm_hidden": 32, "vision_hidden": 32,
                                                      "lm_layers": 1, "vision_layers": 1}},
    manifest_samples=2_000,
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
    stages = 6
    console.rule(f"MixAtlas demo{' (quick)' if quick else ''} -> {out}")

    console.print(f"[bold][1/{stages}][/] synthetic corpus ({plan.corpus_samples} samples)")
    corpus = _corpus(out, plan)
    console.print(f"[bold][2/{stages}][/] atlas: pixels embedder, k={plan.k}")
    atlas = _atlas(out, corpus, plan)
    studies = _searches(out, atlas, plan, stages)
    console.print(f"[bold][4/{stages}][/] recipe")
    recipe, per_axis = _recipe(out, studies)
    console.print(f"[bold][5/{stages}][/] materialize {plan.manifest_samples} samples (llava manifest)")
    manifest = _materialize(out, atlas, recipe, plan)
    console.print(f"[bold][6/{stages}][/] report")
    report = _report(out, studies, atlas, recipe)
    _summary(recipe, per_axis, manifest, report)
    return DemoOutputs(corpus, atlas.dir, studies, recipe, manifest, report)


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


def _searches(out: Path, atlas: Any, plan: DemoPlan, stages: int) -> list[Path]:
    """The per-axis studies (4 methods x task/concept) and the joint gp-ucb study, run or resumed."""
    from mixatlas.executors import make_executor
    from mixatlas.objectives.base import Target
    from mixatlas.objectives.registry import build_objective
    from mixatlas.search.loop import run_search
    from mixatlas.search.study import Study
    from mixatlas.space import MixtureSpace

    runs = [(axis, method, plan.budget) for axis in ("task", "concept") for method in AXIS_METHODS]
    runs.append(("joint", "gp-ucb", plan.joint_budget))
    total = sum(budget for *_, budget in runs)
    console.print(f"[bold][3/{stages}][/] searches: {len(runs)} studies, {total} proxy runs, "
                  f"{plan.parallel} in parallel")
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
    """One recipe per gp-ucb study (baselines: the same axis's other methods); the best is recipe.yaml."""
    from mixatlas.recipe import Recipe, recipe_from_study

    per_axis: dict[str, Any] = {}
    for path in studies:
        axis, method = path.parent.name.split("-", 1)
        if method != "gp-ucb":
            continue
        target = out / "recipes" / f"{axis}.yaml"
        if target.is_file():
            per_axis[axis] = Recipe.load(target)
            continue
        baselines = [p for p in studies if p.parent.name.split("-", 1)[0] == axis and p != path]
        if not baselines:  # the joint search compares with every per-axis baseline
            baselines = [p for p in studies if not p.parent.name.endswith("gp-ucb")]
        per_axis[axis] = recipe_from_study(path, baselines=baselines)
        per_axis[axis].save(target)
    best_axis = min(per_axis, key=lambda a: per_axis[a].score()[0])
    final = out / "recipe.yaml"
    per_axis[best_axis].save(final)
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

    return build_report(studies, out / "report", atlas=atlas.dir, recipe=recipe)


def _summary(recipe_path: Path, per_axis: dict[str, Any], manifest: Path, report: Path) -> None:
    """The last lines: the recipe, gp-ucb against the best baseline per axis, and where things are."""
    from rich.table import Table

    from mixatlas.recipe import Recipe

    recipe = Recipe.load(recipe_path)
    console.rule("what the demo found")
    recipe.show(console)
    table = Table(title=f"gp-ucb vs. the best baseline at equal budget ({TARGET}, lower is better)",
                  title_justify="left")
    for col in ("axis", "gp-ucb recipe", "best baseline", "gain (± sd)"):
        table.add_column(col)
    for axis, r in per_axis.items():
        score = r.score()
        gain = r.gain_over_best_baseline()
        if score is None or gain is None:
            continue
        sd = "" if gain[1] is None else f" ± {gain[1]:.3f}"
        table.add_row(axis, f"{score[0]:.4f}", f"{gain[2].value:.4f} ({gain[2].method}, {gain[2].mode})",
                      f"{gain[0]:+.4f}{sd}")
    console.print(table)
    console.print(f"recipe:   {recipe_path} (from the {recipe.provenance.get('mode')} axis)")
    console.print(f"manifest: {manifest}")
    console.print(f"report:   [bold]{report}[/]")
