"""Mixtures over atlas cells and the spaces searched over them.

A :class:`Mixture` is always the full k x T cell matrix (concepts x tasks), whatever search mode produced it.
A :class:`MixtureSpace` holds the cells, the constraints and a :class:`Parametrization` (one class per
search mode in MODES) that maps parameters <-> mixtures.
"""

from mixatlas.space.mixture import SUM_TOL, Mixture
from mixatlas.space.mixture_space import MixtureSpace
from mixatlas.space.parametrization import (
    FEASIBLE_TOL,
    MODES,
    PARAMETRIZATIONS,
    WITHIN,
    ConceptParametrization,
    FactoredParametrization,
    JointParametrization,
    Parametrization,
    TaskParametrization,
    project_box_simplex,
)

__all__ = [
    "FEASIBLE_TOL", "MODES", "PARAMETRIZATIONS", "SUM_TOL", "WITHIN", "ConceptParametrization",
    "FactoredParametrization", "JointParametrization", "Mixture", "MixtureSpace", "Parametrization",
    "TaskParametrization", "project_box_simplex",
]
