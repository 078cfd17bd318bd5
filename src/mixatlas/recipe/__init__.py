"""The recipe stage: the recipe artifact, building it from a study, moving it to a new corpus, and
materializing it."""

from mixatlas.recipe.from_study import recipe_from_study, study_family
from mixatlas.recipe.materialize import (
    MaterializeSummary,
    largest_remainder_counts,
    materialize,
    source_probabilities,
)
from mixatlas.recipe.recipe import BaselineScore, Observation, Prediction, Recipe
from mixatlas.recipe.transfer import REDISTRIBUTION_RULE, apply_recipe, redistribute

__all__ = [
    "REDISTRIBUTION_RULE",
    "BaselineScore",
    "MaterializeSummary",
    "Observation",
    "Prediction",
    "Recipe",
    "apply_recipe",
    "largest_remainder_counts",
    "materialize",
    "recipe_from_study",
    "redistribute",
    "source_probabilities",
    "study_family",
]
