"""The built-in proxy objective: a LLaVA-style model trained on a mixture and scored on benchmarks.

`ProxyObjective` is what the search loop ships to workers: cheap to construct and to pickle (a config
and a path); the model, tokenizer and data are built inside `evaluate`.
"""

from __future__ import annotations

from pathlib import Path

from mixatlas.objectives.base import Result, TrialContext
from mixatlas.objectives.proxy.config import ProxyConfig, TinyArch
from mixatlas.objectives.proxy.train import resolve_mixture, train_proxy
from mixatlas.space import Mixture

__all__ = ["ProxyConfig", "ProxyObjective", "TinyArch", "resolve_mixture", "train_proxy"]


class ProxyObjective:
    """Trains one proxy per trial in `ctx.trial_dir` with `ctx.seed`; metrics as in `train_proxy`.

    The trial folder's `mixture.json` / `metrics.json` are the caller's (`TrialFolder`); the trainer adds
    `train_log.jsonl` and `proxy.yaml`.

    `config` is a ProxyConfig, its dict, or a YAML path. Example:
        objective = ProxyObjective("examples/proxy.yaml", "runs/atlas")
        result = objective.evaluate(mixture, TrialContext(0, Path("runs/t0"), seed=0))
    """

    # imported once by the local executor's fork server (they are ~90% of a tiny proxy trial's time)
    worker_imports = (
        "torch",
        "transformers.models.llava.modeling_llava",
        "transformers.models.clip.modeling_clip",
        "transformers.models.qwen2.modeling_qwen2",
        "mixatlas.atlas",
        "mixatlas.objectives.proxy.train",
    )

    def __init__(self, config: ProxyConfig | dict | str | Path, atlas_dir: str | Path) -> None:
        if isinstance(config, ProxyConfig):
            self.config = config
        elif isinstance(config, dict):
            self.config = ProxyConfig.from_dict(config)
        else:
            self.config = ProxyConfig.from_yaml(config)
        self.atlas_dir = str(atlas_dir)

    def evaluate(self, mixture: Mixture, ctx: TrialContext) -> Result:
        """Train at `ctx.fidelity` when a multi-fidelity search gives one (`proxy.fidelity` syntax)."""
        from mixatlas.objectives.proxy.fidelity import proxy_config_at

        config = proxy_config_at(self.config, ctx.fidelity)
        return train_proxy(
            Path(self.atlas_dir), mixture, config, Path(ctx.trial_dir), ctx.seed, progress=False
        )
