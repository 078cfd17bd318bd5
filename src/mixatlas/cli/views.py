"""Rich views of the library's results (recipes, the demo's findings): printing lives in the CLI layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Group
from rich.table import Table

from mixatlas.console import console

if TYPE_CHECKING:
    from mixatlas.demo import DemoOutputs
    from mixatlas.recipe import Recipe


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def recipe_view(recipe: Recipe) -> Any:
    """A rich renderable of a recipe: cell weights (%) with marginals, then its facts and baselines."""
    w = recipe.weights_kt
    cells = Table(title="cell weights (%)", title_justify="left")
    cells.add_column("concept")
    for task in recipe.tasks:
        cells.add_column(task, justify="right")
    cells.add_column("total", justify="right", style="bold")
    for name, row in zip(recipe.concepts, w, strict=True):
        cells.add_row(name, *(_pct(v) for v in row), _pct(row.sum()))
    cells.add_row("total", *(_pct(v) for v in w.sum(axis=0)), _pct(w.sum()), style="bold")

    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="cyan")
    facts.add_column()
    for key, value in recipe.facts():
        facts.add_row(key, value)
    parts: list[Any] = [cells, facts]
    if recipe.baselines:
        base = Table(title="baselines (same study family)", title_justify="left")
        for col in ("method", "mode", "best value", "trial", "trials", "study"):
            base.add_column(col)
        for b in recipe.baselines:
            base.add_row(b.method, b.mode, f"{b.value:.4g}", str(b.trial_id), str(b.n_trials), b.study)
        parts.append(base)
    return Group(*parts)


def print_recipe(recipe: Recipe) -> None:
    """Print a recipe as rich tables (to stderr, like every view)."""
    console.print(recipe_view(recipe))


def show_demo_summary(outputs: DemoOutputs) -> None:
    """The demo's last lines: the recipe, re-evaluated scores, gp-ucb's gain over the best baseline per
    axis, and where everything is."""
    from mixatlas.demo import TARGET, gains, seed_noise_sd
    from mixatlas.recipe import Recipe

    final = outputs.final
    recipe = Recipe.load(outputs.recipe)
    noise = seed_noise_sd(final)
    console.rule("what the demo found")
    print_recipe(recipe)
    seeds = len(next(iter(final.values())))
    scores = Table(title=f"recommendations re-trained at {seeds} fresh seed(s) ({TARGET}, lower is better)",
                   title_justify="left")
    for col in ("study", "mean", "runs"):
        scores.add_column(col)
    for name, values in sorted(final.items(), key=lambda item: np.mean(item[1])):
        scores.add_row(name, f"{np.mean(values):.4f}", " ".join(f"{v:.4f}" for v in values))
    console.print(scores)
    noise_txt = "" if noise is None else f"; sd from the seed noise {noise:.4f} between fresh seeds"
    table = Table(title=f"gain of gp-ucb over the best baseline (> 0: gp-ucb better{noise_txt})",
                  title_justify="left")
    for col in ("axis", "best baseline", "gain ± sd"):
        table.add_column(col)
    for axis, baseline, gain, sd in gains(outputs.studies, final, noise):
        table.add_row(axis, baseline, f"{gain:+.4f}" + ("" if sd is None else f" ± {sd:.4f}"))
    console.print(table)
    console.print(f"finished in {outputs.elapsed_s / 60:.1f} min")
    axis = recipe.provenance.get("mode")
    console.print(f"recipe:   {outputs.recipe} (from the {axis} axis)", soft_wrap=True)
    console.print(f"manifest: {outputs.manifest}", soft_wrap=True)
    console.print(f"report:   [bold]{outputs.report}[/]", soft_wrap=True)
