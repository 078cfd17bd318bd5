"""`mixatlas demo`: the whole pipeline offline on a synthetic corpus, resumable stage by stage.

corpus (synthetic) -> atlas (`pixels` embedder) -> the paper's per-axis searches (task axis, concept axis)
with gp-ucb and the regmix / random / uniform baselines at one equal budget, plus a joint gp-ucb search ->
recipe -> materialized llava manifest -> HTML report. Every stage leaves its output in OUT and is skipped
when that output is already complete, so re-running after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.console import console, progress_bar
from mixatlas.executors import make_executor

AXIS_METHODS = ("gp-ucb", "regmix", "random", "uniform")
# A benchmark-targeted recipe (the paper's point): the average over all benchmarks is flat near uniform
# on a balanced corpus, a chart + document target is not.
TARGET = "0.5*chart-vqa/nll + 0.5*document-ocr/nll"
STAGES = 7
FINAL_SEED = 10_000  # final re-evaluations use seeds FINAL_SEED + r, never used by a search trial


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
    final_seeds: int = 2  # fresh seeds, shared by all methods, at which each recommendation is re-trained
    max_epochs: float = 4.0
    parallel: int = 2
    seed: int = 0


FULL = DemoPlan(
    corpus_samples=1500, k=8, budget=12, joint_budget=16, final_seeds=3,
    proxy={"steps": 40, "batch_size": 8, "warmup_steps": 3, "eval_samples": 16, "eval_generate": False,
           "max_len": 96, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 384, "lm_hidden": 64,
                                                      "vision_hidden": 32, "vision_layers": 1}},
    manifest_samples=1500,
)
QUICK = DemoPlan(
    corpus_samples=400, k=3, budget=3, joint_budget=3,
    proxy={"steps": 6, "batch_size": 4, "warmup_steps": 1, "eval_samples": 8, "eval_generate": False,
           "max_len": 96, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 300,
                                                      "lm_hidden": 32, "vision_hidden": 32,
                                                      "lm_layers": 1, "vision_layers": 1}},
    manifest_samples=400, eval_per_benchmark=12, final_seeds=1,
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
    final: dict[str, list[float]]  # study name -> target value of its recommendation at each final seed
    elapsed_s: float


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
    spec = {"kind": "proxy", "config": plan.proxy, "atlas": str(atlas.dir)}
    with make_executor("local", parallel=plan.parallel, folder=out / "studies") as executor:
        with _stage(3, f"searches: {len(runs)} studies, {sum(b for *_, b in runs)} proxy runs, "
                       f"{plan.parallel} in parallel"):
            studies = _searches(out, atlas, plan, runs, spec, executor)
        with _stage(4, f"final evaluation: every recommendation re-trained at {plan.final_seeds} fresh "
                       "seed(s) shared by all methods"):
            final = _final_evaluation(out, studies, plan, spec, executor)
    with _stage(5, "recipe: one per gp-ucb study; the best re-evaluated one is recipe.yaml"):
        recipe = _recipe(out, studies, final)
    with _stage(6, f"materialize {plan.manifest_samples} samples (llava manifest)"):
        manifest = _materialize(out, atlas, recipe, plan)
    with _stage(7, "report"):
        report = _report(out, studies, atlas, recipe)
    elapsed_s = time.monotonic() - started
    return DemoOutputs(corpus, atlas.dir, studies, recipe, manifest, report, final, elapsed_s)


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
    from mixatlas.corpus.synth import BENCHMARKS, synthesize

    corpus = out / "corpus"
    if (corpus / "synth.json").is_file():  # written last by `synthesize`
        console.print("  done already")
        return corpus
    total = plan.corpus_samples + plan.eval_per_benchmark * len(BENCHMARKS)
    with progress_bar(True, "rendering images", total=total, transient=True) as bar:
        synthesize(corpus, samples=plan.corpus_samples, seed=plan.seed,
                   eval_per_benchmark=plan.eval_per_benchmark, workers=plan.parallel, progress=bar)
    return corpus


def _atlas(out: Path, corpus: Path, plan: DemoPlan) -> Any:
    from mixatlas.atlas import Atlas, build_atlas

    folder = out / "atlas"
    if (folder / "atlas.json").is_file():
        console.print("  done already")
        return Atlas.load(folder)
    return build_atlas(corpus, folder, embedder="pixels", k=plan.k, seed=plan.seed, workers=plan.parallel)


def _searches(out: Path, atlas: Any, plan: DemoPlan, runs: list[tuple[str, str, int]], spec: dict,
              executor: Any) -> list[Path]:
    """The per-axis studies (4 methods x task/concept) and the joint gp-ucb study, run or resumed."""
    from mixatlas.objectives.base import Target
    from mixatlas.objectives.registry import build_objective
    from mixatlas.search.loop import run_search
    from mixatlas.search.study import Study, TrialState
    from mixatlas.space import MixtureSpace

    objective = build_objective(spec)
    meta = {"atlas": str(atlas.dir), "atlas_fingerprint": atlas.fingerprint,
            "centroids_fingerprint": atlas.centroids_fingerprint, "demo": True,
            # common random numbers: every trial trains at the study seed, so trials differ by mixture only
            "trial_seeds": "shared"}
    paths = []
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
            if study.count(TrialState.DONE) >= study.budget:
                console.print(f"  {axis}-{method}: done already")
                continue
            console.print(f"  {axis} axis, {method}: {study.budget} proxy runs")
            run_search(study, objective, executor, parallel=plan.parallel)
        finally:
            study.close()
    return paths


def _final_evaluation(out: Path, studies: list[Path], plan: DemoPlan, spec: dict,
                      executor: Any) -> dict[str, list[float]]:
    """Target values of each study's recommended mixture re-trained at seeds FINAL_SEED + r.

    A study's best trial is the minimum of noisy runs, which favours methods that evaluate more points
    (and the uniform baseline, whose runs are replicates); re-training every recommendation at the same
    fresh seeds compares the mixtures themselves. Results accumulate in OUT/final_eval.json (resumable).
    """
    from mixatlas.errors import MixAtlasError
    from mixatlas.objectives.base import Target
    from mixatlas.objectives.registry import build_objective
    from mixatlas.search.loop import run_trial
    from mixatlas.search.recommend import recommend
    from mixatlas.search.study import Study

    record = out / "final_eval.json"
    values: dict[str, dict[str, float]] = json.loads(record.read_text()) if record.is_file() else {}
    objective, target = build_objective(spec), Target.parse(TARGET, minimize=True)
    pending = {}
    for path in studies:
        name = path.parent.name
        missing = [r for r in range(plan.final_seeds) if str(r) not in values.get(name, {})]
        if not missing:
            continue
        study = Study.open(path)
        try:
            mixture = recommend(study).mixture
        finally:
            study.close()
        for r in missing:
            folder = out / "final" / name / f"seed-{r}"
            handle = executor.submit(run_trial, objective, mixture.to_dict(), r, str(folder),
                                     FINAL_SEED + r, None)
            pending[handle] = (name, r)
    if not pending:
        console.print("  done already")
    with progress_bar(True, "re-training recommendations", total=len(pending), transient=True) as bar:
        while pending:
            for handle in executor.wait(list(pending), timeout=1.0):
                name, r = pending.pop(handle)
                outcome = executor.result(handle)
                if not outcome.ok:
                    raise MixAtlasError(f"final evaluation of {name} at seed {r}: {outcome.error}; rerun")
                values.setdefault(name, {})[str(r)] = target.value(outcome.result.metrics)
                record.write_text(json.dumps(values, indent=1))
                bar(1)
    return {name: [by_seed[str(r)] for r in range(plan.final_seeds)] for name, by_seed in values.items()}


def _recipe(out: Path, studies: list[Path], final: dict[str, list[float]]) -> Path:
    """One recipe per gp-ucb study (baselines: the same axis's other methods; for the joint search every
    per-axis baseline); the one with the best re-evaluated mean becomes recipe.yaml."""
    from mixatlas.recipe import recipe_from_study

    chosen = out / "recipe.yaml"
    made = False
    for path in studies:
        axis, method = path.parent.name.split("-", 1)
        target = out / "recipes" / f"{axis}.yaml"
        if method != "gp-ucb" or target.is_file():
            continue
        baselines = [p for p in studies if p.parent.name.split("-", 1)[0] == axis and p != path]
        recipe_from_study(path, baselines=baselines or [
            p for p in studies if not p.parent.name.endswith("gp-ucb")]).save(target)
        made = True
    if made or not chosen.is_file():
        best = min((name for name in final if name.endswith("-gp-ucb")), key=lambda n: np.mean(final[n]))
        shutil.copyfile(out / "recipes" / f"{best.split('-', 1)[0]}.yaml", chosen)
    else:
        console.print("  done already")
    return chosen


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


def seed_noise_sd(final: dict[str, list[float]]) -> float | None:
    """Pooled sd of the target between fresh seeds of the same mixture (each study's recommendation
    re-trained at every final seed); None with a single final seed."""
    sum_sq, dof = 0.0, 0
    for values in final.values():
        if len(values) > 1:
            values_arr = np.asarray(values)
            sum_sq += float(((values_arr - values_arr.mean()) ** 2).sum())
            dof += len(values) - 1
    return (sum_sq / dof) ** 0.5 if dof else None


def gains(final: dict[str, list[float]],
          noise_sd: float | None) -> list[tuple[str, str, float, float | None]]:
    """(axis, best baseline, gain, sd) of each gp-ucb study over the best baseline re-evaluated alongside.

    Baselines are the same axis's other methods (all per-axis baselines for the joint search). gain =
    baseline mean - gp-ucb mean (positive = gp-ucb better); sd = noise_sd * sqrt(2 / seeds), each mean
    being an average of `seeds` runs with the pooled seed-to-seed sd.
    """
    rows = []
    for name in final:
        axis, method = name.split("-", 1)
        if method != "gp-ucb":
            continue
        pool = [n for n in final if n.startswith(f"{axis}-") and n != name] or [
            n for n in final if not n.endswith("-gp-ucb")]
        if not pool:
            continue
        best = min(pool, key=lambda n: np.mean(final[n]))
        sd = None if noise_sd is None else noise_sd * (2.0 / len(final[name])) ** 0.5
        rows.append((axis, best, float(np.mean(final[best]) - np.mean(final[name])), sd))
    return rows
