"""The Python-API objective: any callable `Mixture -> dict[str, float] | Result`, or its "module:function"."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, TrialContext
from mixatlas.space import Mixture

MixtureFunction = Callable[[Mixture], "dict[str, float] | Result"]


def resolve_function(spec: str) -> MixtureFunction:
    """Import "package.module:function" (a dotted attribute path after the colon is allowed)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise MixAtlasError(f"callable {spec!r}: write it as package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MixAtlasError(
            f"callable {spec!r}: cannot import {module_name!r} ({exc}); check PYTHONPATH"
        ) from None
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise MixAtlasError(
                f"callable {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise MixAtlasError(f"callable {spec!r}: {attr_path!r} is not callable")
    return target


class CallableObjective:
    """Evaluates a mixture with a plain function returning metrics (or a full `Result`).

    `fn` is the function itself (it must be picklable, i.e. importable at module level) or its
    "package.module:function" spec; with a spec only the string crosses process boundaries and the
    function is imported where the trial runs.
    """

    def __init__(self, fn: MixtureFunction | str) -> None:
        self.spec = fn if isinstance(fn, str) else None
        self._fn = resolve_function(fn) if isinstance(fn, str) else fn
        if not callable(self._fn):
            raise MixAtlasError(f"callable objective: {fn!r} is not callable")

    @property
    def worker_imports(self) -> tuple[str, ...]:
        """The function's module, which the local executor's fork server imports once for all trials."""
        module = self.spec.partition(":")[0] if self.spec else getattr(self._fn, "__module__", None)
        return (module,) if module and module != "__main__" else ()

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "_fn": None if self.spec else self._fn}

    def __setstate__(self, state: dict) -> None:
        self.spec = state["spec"]
        self._fn = resolve_function(self.spec) if self.spec else state["_fn"]

    def evaluate(self, mixture: Mixture, ctx: TrialContext) -> Result:
        started = time.monotonic()
        output = self._fn(mixture)
        if isinstance(output, Result):
            result = output
        elif isinstance(output, dict):
            result = Result.from_dict({"metrics": output}, origin=f"{self._name()} return value")
        else:
            raise TypeError(
                f"{self._name()} returned {type(output).__name__}; expected dict[str, float] or Result"
            )
        if result.cost_s is None:
            result.cost_s = time.monotonic() - started
        return result

    def _name(self) -> str:
        return self.spec or getattr(self._fn, "__qualname__", repr(self._fn))
