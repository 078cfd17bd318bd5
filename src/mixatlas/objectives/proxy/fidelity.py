"""Proxy fidelities: what a fidelity name means for the built-in proxy. The one place the syntax lives.

A multi-fidelity search on the proxy (`mixatlas search --atlas A --proxy-config P --method mf-gp-ucb
--fidelities "steps0.25=1,steps1=4"`) needs no user code: each name shrinks the configured run.

    steps<F>      the configured proxy at fraction F of its steps (and warm-up): steps0.25, steps1
    <SIZE>        the model size SIZE at the configured steps: tiny (the config's own tiny arch),
                  nano (half its widths, half its layers), small (twice both); tiny preset only
    <SIZE>:<F>    both: tiny:0.25, small:1

F is a positive number (1 = the configured run). Costs stay the user's (`NAME=COST`).
"""

from __future__ import annotations

import re

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.proxy.config import ProxyConfig

SIZES: dict[str, float] = {"nano": 0.5, "tiny": 1.0, "small": 2.0}  # width and depth factor of the tiny arch
SYNTAX = "steps<F> (steps0.25), a size (" + " | ".join(SIZES) + ") or SIZE:F (tiny:0.25)"
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_STEPS = re.compile(rf"^steps{_NUMBER}$")
_SIZED = re.compile(rf"^([a-z]+)(?::{_NUMBER})?$")


def parse_fidelity(name: str) -> tuple[str | None, float]:
    """(size or None, steps fraction) of a proxy fidelity name; a one-line MixAtlasError otherwise."""
    steps = _STEPS.match(name)
    if steps:
        size, fraction = None, float(steps.group(1))
    else:
        sized = _SIZED.match(name)
        if sized is None or sized.group(1) not in SIZES:
            raise MixAtlasError(f"proxy fidelity {name!r}: write {SYNTAX}")
        size, fraction = sized.group(1), float(sized.group(2) or 1.0)
    if not fraction > 0:
        raise MixAtlasError(f"proxy fidelity {name!r}: the steps fraction must be positive")
    return size, fraction


def proxy_config_at(config: ProxyConfig, fidelity: str | None) -> ProxyConfig:
    """`config` shrunk (or grown) to `fidelity`; the config itself for None."""
    if fidelity is None:
        return config
    size, fraction = parse_fidelity(fidelity)
    data = config.model_dump()
    data["steps"] = max(1, round(config.steps * fraction))
    data["warmup_steps"] = round(config.warmup_steps * fraction)
    if size is not None:
        if config.preset != "tiny":
            raise MixAtlasError(
                f"proxy fidelity {fidelity!r}: sizes need preset tiny (this config is {config.preset!r}); "
                "use steps<F> fidelities"
            )
        data["tiny"] = _scaled_arch(data["tiny"], SIZES[size])
    return ProxyConfig.from_dict(data, origin=f"proxy fidelity {fidelity!r}")


def check_fidelities(config: ProxyConfig, names: list[str] | tuple[str, ...]) -> None:
    """Every name is a valid fidelity of `config` (raises the first one-line error)."""
    for name in names:
        proxy_config_at(config, name)


def _scaled_arch(arch: dict, factor: float) -> dict:
    """The tiny arch with hidden sizes and layer counts times `factor` (hidden sizes stay multiples of
    their head counts)."""
    arch = dict(arch)
    for hidden, heads in (("vision_hidden", "vision_heads"), ("lm_hidden", "lm_heads")):
        multiple = arch[heads] * (2 if hidden == "lm_hidden" else 1)  # rotary: an even head size
        arch[hidden] = max(multiple, round(arch[hidden] * factor / multiple) * multiple)
    for layers in ("vision_layers", "lm_layers"):
        arch[layers] = max(1, round(arch[layers] * factor))
    return arch
