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
# Methods over (mixture, fidelity) pairs (`search.multifidelity.MultiFidelityOptimizer`): a study with
# `fidelities` uses one of these, a study without uses one of METHODS.
MF_METHODS: tuple[str, ...] = ("mf-gp-ucb",)


def is_multifidelity(name: str) -> bool:
    """Whether `name` is a multi-fidelity method (it needs `fidelities`)."""
    return name in MF_METHODS


def optimizer_class(name: str) -> type[Optimizer]:
    """The Optimizer class registered as `name`; MixAtlasError naming the known methods otherwise."""
    if name not in METHODS:
        if name in MF_METHODS:
            raise MixAtlasError(
                f"method {name!r} is multi-fidelity; give --fidelities NAME=COST,... (or another --method)"
            )
        raise MixAtlasError(
            f"unknown search method {name!r}; choose one of {', '.join((*METHODS, *MF_METHODS))}"
        )
    module, _, cls = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_optimizer(name: str, **options: object) -> Optimizer:
    """An optimizer by registry name, with its keyword options (e.g. `beta_scale=0.2` for gp-ucb)."""
    cls = optimizer_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise MixAtlasError(f"method {name!r}: bad options {sorted(options)} ({exc})") from None


def make_mf_optimizer(name: str, **options: object):  # -> MultiFidelityOptimizer (torch-free import here)
    """A multi-fidelity optimizer by name; a single-fidelity name gets a one-line error saying so."""
    if name not in MF_METHODS:
        raise MixAtlasError(
            f"method {name!r} is single-fidelity; --fidelities needs --method {' or '.join(MF_METHODS)}"
        )
    from mixatlas.search.multifidelity import make_mf_optimizer as make

    return make(name, **options)
