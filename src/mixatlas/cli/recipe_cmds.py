"""CLI commands of the recipe stage: recipe (make, show, apply), materialize, report and demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
import typer
from typer.core import TyperGroup

from mixatlas.cli.views import print_recipe, show_demo_summary
from mixatlas.console import console

if TYPE_CHECKING:
    from mixatlas.recipe import Recipe


class _RecipeGroup(TyperGroup):
    """`mixatlas recipe STUDY ...` means `mixatlas recipe make STUDY ...`; `show`/`apply` stay subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["make", *args]
        return super().parse_args(ctx, args)


recipe_app = typer.Typer(
    cls=_RecipeGroup,
    no_args_is_help=True,
    help="Make a recipe from a study (`mixatlas recipe STUDY --out R.yaml`), show it, or apply it elsewhere.",
)


@recipe_app.command("make")
def make_recipe(
    study: Path = typer.Argument(..., help="Study file (study.db) or its folder."),
    out: Path = typer.Option(..., "--out", help="Recipe YAML to write."),
    target: str | None = typer.Option(None, "--target", help="Recommend for another target, e.g. 'ocr/nll'"),
    baseline: list[Path] | None = typer.Option(
        None, "--baseline", help="Baseline studies to compare with (default: same-atlas studies beside STUDY)"
    ),
) -> None:
    """Write the recipe of a study's recommendation (weights, prediction, provenance, baselines)."""
    from mixatlas.recipe import recipe_from_study

    recipe = recipe_from_study(study, target=target, baselines=baseline or None)
    recipe.save(out)
    print_recipe(recipe)
    console.print(f"recipe written to [bold]{out}[/]")


@recipe_app.command("show")
def show_recipe(recipe: Path = typer.Argument(..., help="Recipe YAML.")) -> None:
    """Print a recipe as readable tables."""
    from mixatlas.recipe import Recipe

    print_recipe(Recipe.load(recipe))


@recipe_app.command("apply")
def apply_recipe_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML made on another atlas."),
    atlas: Path = typer.Option(..., "--atlas", help="New corpus atlas (from `mixatlas atlas assign`)."),
    out: Path = typer.Option(..., "--out", help="Recipe YAML to write for the new atlas."),
    transfer: bool = typer.Option(False, "--transfer", help="Match concepts by name when centroids differ."),
) -> None:
    """Move a recipe to a new corpus: same cell weights, empty cells redistributed (and reported)."""
    from mixatlas.atlas import Atlas
    from mixatlas.recipe import Recipe, apply_recipe

    moved = apply_recipe(Recipe.load(recipe), Atlas.load(atlas), force=transfer)
    moved.save(out)
    print_recipe(moved)
    _print_missing(moved)
    console.print(f"recipe for {atlas} written to [bold]{out}[/]")


def _print_missing(recipe: Recipe) -> None:
    """One line per cell the new corpus lacks, saying where its weight went."""
    note = recipe.provenance["transfers"][-1]
    console.print(note["summary"])
    for cell in note["missing_cells"]:
        where = "all non-empty cells" if cell["moved_to"] == "all" else f"the same {cell['moved_to']}"
        console.print(f"  empty: {cell['cell']} ({100 * cell['weight']:.2f}% moved to {where})")


def materialize_cmd(
    atlas: Path = typer.Option(..., "--atlas", help="Atlas folder to draw samples from."),
    recipe: Path = typer.Option(..., "--recipe", help="Recipe YAML."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    samples: int = typer.Option(0, "--samples", help="Number of samples N in the manifest."),
    fmt: str = typer.Option("llava", "--format", help="llava (JSONL), wds (tar shards) or parquet."),
    max_epochs: float | None = typer.Option(
        None, "--max-epochs", help="Max repeats of a sample (default: the recipe's epoch cap, else 1)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw and the global shuffle."),
    transfer: bool = typer.Option(False, "--transfer", help="Accept a recipe made on another atlas."),
    hf_probabilities: bool = typer.Option(
        False, "--hf-probabilities",
        help="Write per-source probabilities for datasets.interleave_datasets instead of a manifest.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing materialization in OUT."),
) -> None:
    """Materialize a recipe into a shuffled training manifest with exact per-cell counts."""
    from mixatlas.atlas import Atlas
    from mixatlas.errors import MixAtlasError
    from mixatlas.recipe import Recipe, apply_recipe, materialize, source_probabilities

    the_atlas = Atlas.load(atlas)
    loaded = Recipe.load(recipe, atlas=the_atlas, transfer=transfer)
    if loaded.atlas_fingerprint != the_atlas.fingerprint:
        loaded = apply_recipe(loaded, the_atlas, force=True)
        _print_missing(loaded)
    if hf_probabilities:
        probs = source_probabilities(the_atlas, loaded)
        out.mkdir(parents=True, exist_ok=True)
        (out / "hf_probabilities.json").write_text(json.dumps(probs, indent=1))
        console.print_json(json.dumps(probs))
        console.print(f"probabilities written to [bold]{out / 'hf_probabilities.json'}[/]; pass them as "
                      "`datasets.interleave_datasets(datasets, probabilities=[...])` in this source order")
        return
    if samples <= 0:
        raise MixAtlasError("--samples: give the number of samples to materialize (e.g. --samples 1000000)")
    summary = materialize(the_atlas, loaded, samples, out, format=fmt, max_epochs=max_epochs, seed=seed,
                          overwrite=overwrite)
    console.print(f"{summary.samples} samples ({summary.format}) written to [bold]{out}[/]: "
                  f"{', '.join(summary.files[:3])}{' ...' if len(summary.files) > 3 else ''}; "
                  f"max epochs over cells {summary.cell_epochs_max:.2f}")


def report_cmd(
    studies: list[Path] = typer.Argument(..., help="Study files (or folders) to report on."),
    out: Path = typer.Option(..., "--out", help="Output folder for index.html and the figures."),
    atlas: Path | None = typer.Option(None, "--atlas", help="Atlas folder (for the exemplar grid)."),
    recipe: Path | None = typer.Option(None, "--recipe", help="Recipe YAML to show (default: best study's)."),
) -> None:
    """Build a static HTML report: recipe heatmap, best-so-far curves, GP posterior, loss curves, trials."""
    from mixatlas.report import build_report

    index = build_report(studies, out, atlas=atlas, recipe=recipe)
    console.print(f"report written to [bold]{index}[/]")


def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for everything the demo makes."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run (about a minute) for tests."),
) -> None:
    """Run the whole pipeline offline: corpus -> atlas -> searches -> recipe -> manifest -> report."""
    from mixatlas.demo import run_demo

    show_demo_summary(run_demo(out, quick=quick))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.add_typer(recipe_app, name="recipe")
    app.command("materialize")(materialize_cmd)
    app.command("report")(report_cmd)
    app.command("demo")(demo_cmd)
