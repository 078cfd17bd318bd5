"""The registry of search methods: a name in a config or on the command line -> an `Optimizer` class.

Each entry names its class as "module:Class", imported only when the method is built, so reading the
names (CLI choices, config checks) does not load torch/BoTorch.
"""

from __future__ import annotations

import importlib

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import Optimizer

METHODS: dict[str, str] = {
    "gp-ucb": "mixatlas.search.gp_ucb:GPUCB",
    "regmix": "mixatlas.search.regmix:RegMix",
    "random": "mixatlas.search.baselines:RandomSearch",
    "uniform": "mixatlas.search.baselines:UniformMixture",
    "natural": "mixatlas.search.baselines:NaturalMixture",
    "mixing-law": "mixatlas.search.mixing_law:MixingLawSearch",
    "gp-guarded": "mixatlas.search.guardrails:GuardedSearch",  # needs guards (`--guard`)
}


def optimizer_class(name: str) -> type[Optimizer]:
    """The Optimizer class registered as `name`; MixAtlasError naming the known methods otherwise."""
    if name not in METHODS:
        raise MixAtlasError(f"unknown search method {name!r}; choose one of {', '.join(METHODS)}")
    module, _, cls = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_optimizer(name: str, **options: object) -> Optimizer:
    """An optimizer by registry name, with its keyword options (e.g. `beta_scale=0.2` for gp-ucb)."""
    cls = optimizer_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise MixAtlasError(f"method {name!r}: bad options {sorted(options)} ({exc})") from None
