"""Where a proxy runs: this process's place in a torchrun launch, its device, and the autocast context.

Shared by training and evaluation (both import it; it imports neither), so the proxy package has no circle.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixatlas.objectives.proxy.config import ProxyConfig


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a torchrun launch (rank 0 of 1 when launched plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistributedContext:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> Any:
        """`cuda:<local_rank>` when a GPU is visible, else the CPU (a `torch.device`)."""
        import torch

        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    def finish(self) -> None:
        """Wait for every rank, then tear the process group down (no-op for a plain launch)."""
        if self.world_size > 1:
            import torch.distributed as torch_dist

            torch_dist.barrier()
            torch_dist.destroy_process_group()


def autocast_factory(config: ProxyConfig, device: Any) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument context factory: bf16 autocast on `device` when `config.bf16`, else a no-op."""
    import torch

    if config.bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
