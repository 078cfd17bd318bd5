"""The static report: one offline `index.html` (inline CSS, no scripts, no CDN) beside its PNG figures."""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixatlas.console import progress_bar
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.publish import check_replaceable, fresh_staging, publish
from mixatlas.recipe.from_study import recipe_from_study, resolve_study_path
from mixatlas.recipe.recipe import Recipe
from mixatlas.report import figures
from mixatlas.space import Mixture

if TYPE_CHECKING:
    from mixatlas.search.recommend import Posterior

GRID_POINTS = 41

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.facts td { text-align: left; border: none; } .muted { color: #777; }
"""


@dataclass
class StudyView:
    """What the report needs from one study (read once, then the database is closed)."""

    path: Path
    name: str
    method: str
    mode: str
    target: Target
    budget: int
    seed: int
    done: list[Any]  # finished Trials in id order
    trials: list[Any]  # all Trials in id order
    space: Any
    history: Any
    method_options: dict

    @property
    def values(self) -> list[float]:
        return [t.value for t in self.done]

    def best_trial(self) -> Any:
        return self.target.best(self.done, key=lambda t: t.value) if self.done else None


def load_study(path: Path) -> StudyView:
    """Read a study into a :class:`StudyView`."""
    from mixatlas.search.study import Study, TrialState

    path = resolve_study_path(path)
    study = Study.open(path)
    try:
        return StudyView(
            path=path, name=path.parent.name if path.name == "study.db" else path.stem,
            method=study.method, mode=study.space.mode, target=study.target,
            budget=study.budget, seed=study.seed, done=study.trials(TrialState.DONE),
            trials=study.trials(), space=study.space, history=study.history(),
            method_options=study.method_options,
        )
    finally:
        study.close()


def _vary_marginal(weights_kt: np.ndarray, counts_kt: np.ndarray, axis: str, index: int,
                   value: float) -> np.ndarray:
    """(k, T) weights with one task (axis "task") or concept marginal set to `value`.

    The chosen line keeps its inner split (its counts' split if it was empty); the other lines are scaled
    together so their ratios stay as in the recommendation (by counts if they were all empty).
    """
    w = weights_kt if axis == "concept" else weights_kt.T
    c = counts_kt if axis == "concept" else counts_kt.T
    w = w.copy()
    line = w[index].sum()
    w[index] = w[index] / line * value if line > 0 else c[index] / max(c[index].sum(), 1) * value
    rest = np.delete(np.arange(len(w)), index)
    other = w[rest].sum()
    w[rest] = w[rest] / other * (1 - value) if other > 0 else c[rest] / max(c[rest].sum(), 1) * (1 - value)
    return w if axis == "concept" else w.T


def posterior_of(view: StudyView) -> Posterior | None:
    """The study method's surrogate posterior on the study's history (`search.recommend.posterior_for`),
    or None when its method has none."""
    from mixatlas.search.recommend import posterior_for

    return posterior_for(view.method, view.method_options, view.history)


def axis_slices(
    view: StudyView, mixture: Mixture, posterior: Posterior | None = None
) -> list[figures.AxisSlice]:
    """The surrogate posterior along every marginal the study's mode can vary, around `mixture` (target
    units); `posterior` default: the study method's (`posterior_of`). [] when the method has none."""
    posterior = posterior_of(view) if posterior is None else posterior
    if posterior is None:
        return []
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    slices = []
    axes = {"task": view.space.tasks, "concept": view.space.concepts}
    for axis, names in axes.items():
        marginal = mixture.task_marginal if axis == "task" else mixture.concept_marginal
        for index, name in enumerate(names):
            try:
                params = np.stack([
                    view.space.params_of(Mixture(mixture.concepts, mixture.tasks, _vary_marginal(
                        mixture.weights_kt, view.space.counts_kt, axis, index, value)))
                    for value in grid
                ])
            except MixAtlasError:  # this mode cannot move this axis (e.g. tasks in concept mode)
                break
            mean, sd = posterior(params)
            slices.append(figures.AxisSlice(axis, name, grid, view.target.from_utility(np.asarray(mean)),
                                            np.asarray(sd),
                                            float(marginal[index])))
    return slices


def _best_so_far_panels(views: list[StudyView]) -> dict[str, list[figures.Series]]:
    groups: dict[str, dict[str, list[list[float]]]] = {}
    for v in views:
        if v.done:
            groups.setdefault(v.mode, {}).setdefault(v.method, []).append(v.values)
    return {
        mode: [figures.Series(method, figures.best_so_far_matrix(vals, views[0].target))
               for method, vals in sorted(methods.items())]
        for mode, methods in groups.items()
    }


def _steps_table(views: list[StudyView]) -> tuple[list[dict], str | None]:
    """Steps-to-loss of each study's best trial against the uniform study's trial in the same mode."""
    from mixatlas.analyze.steps import steps_to_loss

    rows: list[dict] = []
    for mode in dict.fromkeys(v.mode for v in views):
        in_mode = [v for v in views if v.mode == mode and v.done]
        uniform = next((v for v in in_mode if v.method == "uniform"), None)
        if uniform is None or not uniform.done[0].trial_dir:
            continue
        runs = [(v, v.best_trial()) for v in in_mode if v.best_trial().trial_dir]
        try:
            table = steps_to_loss([Path(t.trial_dir) for _, t in runs], Path(uniform.done[0].trial_dir))
        except MixAtlasError as exc:
            return [], str(exc)
        for (v, trial), row in zip(runs, table, strict=True):
            rows.append({"axis": mode, "study": v.name, "method": v.method, "trial": trial.id, **row})
    if not rows:
        return [], "needs a `uniform` study with loss curves in the same axis"
    return rows, None


def _guard_fronts(views: list[StudyView], out: Path) -> str:
    """For each guarded study (gp-guarded, 3+ finished trials): one front figure per guard, the posterior
    mean target gain against the guard metric's change at every evaluated mixture (both vs the natural
    mixture), the recommendation ringed; "" when no study is guarded."""
    from mixatlas.search.guardrails import Guard
    from mixatlas.search.recommend import assess_guards, recommend_history

    parts = []
    for v in views:
        if len(v.done) < 3:
            continue
        points = np.atleast_2d(v.history.done_params)
        assessed = assess_guards(v.method, v.method_options, v.history, points)
        if assessed is None:
            continue
        chosen_params = recommend_history(v.method, v.method_options, v.history).params
        chosen = int(np.argmin(np.abs(points - chosen_params[None]).max(axis=1)))
        for guard in (Guard.parse(spec) for spec in assessed.guard_change):
            name = f"guard_front_{len(parts)}.png"
            figures.guard_front(assessed.target_gain, assessed.guard_change[guard.spec], guard.delta,
                                out / name, chosen=chosen,
                                xlabel=f"{guard.metric} change vs natural (posterior mean)",
                                ylabel=f"{v.target.spec} gain vs natural (posterior mean, + = better)",
                                op=guard.op)
            p_holds = float(assessed.guard_probability[guard.spec][chosen])
            parts.append(f"<h3>{html.escape(v.name)}: {html.escape(guard.spec)}</h3><p>P(guard holds) at "
                         f"the recommendation: {p_holds:.3f}</p><img src='{name}' alt='{name}'>")
    if not parts:
        return ""
    return ("<h2>Guardrails</h2><p>Each evaluated mixture's target gain against a guard metric's change, "
            "both vs the natural mixture's prediction; the blue line is the front (the best gain for a "
            "change at least this safe), the dashed line the guard's limit.</p>" + "".join(parts))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _recipe_section(recipe: Recipe) -> str:
    w = recipe.weights_kt
    rows = [[c, *(100 * w[i]), 100 * w[i].sum()] for i, c in enumerate(recipe.concepts)]
    rows.append(["total", *(100 * w.sum(axis=0)), 100.0])
    cells = _table(["concept \\ task (%)", *recipe.tasks, "total"], rows)
    facts = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                    for k, v in recipe.facts())
    return f"{cells}<table class='facts'>{facts}</table>"


def _trial_tables(views: list[StudyView]) -> str:
    parts = []
    for v in views:
        tasks = v.space.tasks
        header = ["id", "state", "value", "cost s", "attempts", *(f"{t} %" for t in tasks),
                  "top concepts", "error"]
        rows = []
        for t in v.trials:
            concept_m = t.mixture.concept_marginal
            top = ", ".join(f"{t.mixture.concepts[i]} {100 * concept_m[i]:.0f}%"
                            for i in np.argsort(-concept_m)[:3])
            rows.append([t.id, t.state, t.value, t.cost_s, t.attempts, *(100 * t.mixture.task_marginal),
                         top, t.error])
        summary = (f"{html.escape(v.name)}: {html.escape(v.method)}, {v.mode} axis, "
                   f"{len(v.done)}/{v.budget} finished, seed {v.seed}")
        parts.append(f"<details><summary>{summary}</summary>{_table(header, rows)}</details>")
    return "\n".join(parts)


def _pick_recipe_study(views: list[StudyView]) -> StudyView:
    """The study whose recommendation the page shows: the best finished gp-ucb or gp-guarded study (joint
    first)."""
    searched = [v for v in views if v.method in ("gp-ucb", "gp-guarded") and v.done]
    pool = searched or [v for v in views if v.done]
    if not pool:
        raise MixAtlasError("report: none of the studies has a finished trial; run the searches first")
    joint = [v for v in pool if v.space.parametrization.free_cells]
    pool = joint or pool
    best = pool[0].target.best(pool, key=lambda v: v.best_trial().value)
    return best


def _atlas_dir(atlas: Path | None, views: list[StudyView]) -> Path | None:
    if atlas is not None:
        return Path(atlas)
    from mixatlas.search.study import Study

    for v in views:
        study = Study.open(v.path)
        try:
            meta, spec = study.meta, study.objective_spec
        finally:
            study.close()
        for found in (meta.get("atlas"), meta.get("atlas_dir"), spec.get("atlas_dir"), spec.get("atlas")):
            if found and Path(found).is_dir():
                return Path(found)
    return None


def build_report(studies: list[Path], out: Path, atlas: Path | None = None,
                 recipe: Path | None = None) -> Path:
    """Write `out/index.html` and its PNG figures for one or more studies; returns the index path.

    Args:
        studies: study files (or folders): typically one search axis x several methods/seeds.
        out: output folder (created).
        atlas: atlas folder for the exemplar grid (default: the one named in the studies' meta/spec).
        recipe: recipe YAML to show (default: the recipe of the best gp-ucb study, joint mode first).
    """
    if not studies:
        raise MixAtlasError("report: give at least one study")
    final = Path(out)
    check_replaceable(final, ("index.html",))
    out = fresh_staging(final)  # written here, then published whole: never half a report at `final`
    sections: list[str] = []
    with progress_bar(True, "building report", total=6, transient=True) as bar:
        views = [load_study(p) for p in studies]
        targets = {v.target for v in views}
        if len(targets) > 1:
            named = sorted(f"{t.direction} {t.spec}" for t in targets)
            raise MixAtlasError(f"report: the studies optimize different targets {named}; "
                                "report each target separately")
        target = next(iter(targets))
        chosen = _pick_recipe_study(views)
        shown = Recipe.load(recipe) if recipe else recipe_from_study(chosen.path)
        bar(1)

        figures.recipe_heatmap(shown.weights_kt, shown.concepts, shown.tasks, out / "recipe_heatmap.png",
                               title=f"recipe ({shown.provenance.get('method', '?')}, "
                                     f"{shown.provenance.get('mode', '?')} axis)")
        sections.append("<h2>Recipe</h2>" + _recipe_section(shown)
                        + "<img src='recipe_heatmap.png' alt='recipe heatmap'>")
        bar(1)

        figures.best_so_far(_best_so_far_panels(views), out / "best_so_far.png", target)
        sections.append("<h2>Search progress</h2><p>Best target value after each finished trial; bands: "
                        "± 1 sd across studies of the same method and axis.</p>"
                        "<img src='best_so_far.png' alt='best so far'>")
        bar(1)

        posterior_imgs = []
        for v in views:
            posterior = posterior_of(v) if len(v.done) >= 2 else None
            if posterior is None:
                continue
            mixture = v.space.to_mixture(v.best_trial().params)
            slices = axis_slices(v, mixture, posterior)
            if slices:
                name = f"posterior_{len(posterior_imgs)}.png"
                figures.posterior_slices(slices, out / name, v.name, target.spec)
                heading = f"<h3>{html.escape(v.name)}</h3>"
                posterior_imgs.append(f"{heading}<img src='{name}' alt='{name}'>")
        if posterior_imgs:
            sections.append("<h2>GP posterior along each marginal</h2><p>Each panel moves one marginal "
                            "weight from 0 to 1, the others scaled in proportion, around the study's best "
                            "trial.</p>" + "".join(posterior_imgs))
        bar(1)

        atlas_dir = _atlas_dir(atlas, views)
        if atlas_dir is not None and (atlas_dir / "exemplars.png").is_file():
            shutil.copyfile(atlas_dir / "exemplars.png", out / "exemplars.png")
            sections.append("<h2>Concepts</h2><p>Exemplar images of each concept cluster.</p>"
                            "<img src='exemplars.png' alt='concept exemplars'>")
        if atlas_dir is not None and (atlas_dir / "samples.parquet").is_file():
            from mixatlas.atlas.audit import audit_atlas, summary

            rows = summary(audit_atlas(atlas_dir, n=1))
            sections.append("<h2>Task typing</h2><p>Which rule decided each sample's task (<code>mixatlas "
                            "atlas audit</code> lists examples).</p>" + _table(
                                ["task", "samples", "share", "main rules", "mixed turns", "low confidence"],
                                [[r["task"], r["samples"], f"{r['share']:.1%}", r["rules"], r["mixed"],
                                  r["low_confidence"]] for r in rows]))
        bar(1)

        curve_panels = {
            f"{v.name} ({v.method})": [(np.asarray(t.curve, float), t.id == v.best_trial().id)
                                       for t in v.done if t.curve]
            for v in views
        }
        curve_panels = {k: c for k, c in curve_panels.items() if c}
        if curve_panels:
            figures.loss_curves(curve_panels, out / "loss_curves.png")
            sections.append("<h2>Proxy loss curves</h2><img src='loss_curves.png' alt='loss curves'>")
            rows, why_not = _steps_table(views)
            if rows:
                sections.append("<h3>Steps to the uniform mixture's final loss</h3>" + _table(
                    ["axis", "study", "method", "trial", "steps to loss", "of steps", "speed-up"],
                    [[r["axis"], r["study"], r["method"], r["trial"], r["steps_to_loss"], r["total_steps"],
                      r["speedup"]] for r in rows]))
            else:
                sections.append(f"<p class='muted'>No steps-to-loss table: {html.escape(why_not)}</p>")
        sections.append(_guard_fronts(views, out))
        sections.append("<h2>Trials</h2>" + _trial_tables(views))
        bar(1)

    index = out / "index.html"
    index.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>MixAtlas report</title>"
        f"<link rel='icon' href='data:,'><style>{_CSS}</style></head><body>"
        f"<h1>MixAtlas report</h1><p class='muted'>target: {html.escape(target.spec)} "
        f"({target.direction}); {len(views)} studies</p>"
        + "\n".join(sections) + "</body></html>"
    )
    publish(out, final)
    return final / index.name
