"""The registry of search methods: a name in a config or on the command line -> an `Optimizer` class."""

from __future__ import annotations

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import Optimizer
from mixatlas.search.baselines import NaturalMixture, RandomSearch, UniformMixture
from mixatlas.search.gp_ucb import GPUCB
from mixatlas.search.mixing_law import MixingLawSearch
from mixatlas.search.regmix import RegMix

METHODS: dict[str, type[Optimizer]] = {
    "gp-ucb": GPUCB,
    "regmix": RegMix,
    "random": RandomSearch,
    "uniform": UniformMixture,
    "natural": NaturalMixture,
    "mixing-law": MixingLawSearch,
}


def make_optimizer(name: str, **options: object) -> Optimizer:
    """An optimizer by registry name, with its keyword options (e.g. `beta_scale=0.2` for gp-ucb)."""
    if name not in METHODS:
        raise MixAtlasError(f"unknown search method {name!r}; choose one of {', '.join(METHODS)}")
    try:
        return METHODS[name](**options)
    except TypeError as exc:
        raise MixAtlasError(f"method {name!r}: bad options {sorted(options)} ({exc})") from None
