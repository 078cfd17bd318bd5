"""The recipe artifact: a mixture a team can read, trust, move to a new corpus and materialize.

A recipe is a YAML file holding the k x T cell weights with both marginals, the atlas it was found on
(fingerprints), where it came from (study, method, trial or "posterior-mean maximizer", seed, budget),
what the surrogate predicts for it and what was observed, the constraints of the search, the
baselines' scores from the same study family, the posterior probability that it beats the natural
mixture and the best baseline (`p_beats`), and for a guarded search each guardrail with the probability
it holds (`guards`). Building one from a study is `recipe/from_study.py`.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.space import Mixture
from mixatlas.yaml_io import safe_load

RECIPE_VERSION = 1


@dataclass(frozen=True)
class Prediction:
    """The surrogate's prediction of the target for a recipe, in target units (not utility)."""

    mean: float
    sd: float | None
    source: str  # "posterior-mean maximizer", "observed", "regression", ...


@dataclass(frozen=True)
class Observation:
    """The target value a finished trial measured for exactly this mixture."""

    trial_id: int
    value: float


@dataclass(frozen=True)
class BaselineScore:
    """One baseline study's best score on the same target, for comparison with the recipe."""

    study: str
    method: str
    mode: str
    value: float  # best finished trial's target value (target units)
    trial_id: int | None
    n_trials: int


@dataclass(frozen=True)
class Recipe:
    """A mixture with its provenance, prediction and context.

    Attributes:
        mixture: the k x T cell weights (`mixture.weights_kt`, concepts x tasks).
        atlas_fingerprint: fingerprint of the atlas whose cells the weights refer to.
        centroids_fingerprint: fingerprint of the concept centroids (shared by atlases made with
            `atlas assign`), which is what makes a recipe transferable.
        target: the target the study optimized (spec and direction).
        prediction: posterior mean/sd of the target for this mixture, or None.
        observation: the finished trial's target value for this mixture, or None.
        provenance: study, method, mode, chosen ("trial N" | "posterior-mean maximizer"), seed, budget,
            created, and `transfers` (one entry per `recipe apply`).
        constraints: bounds and epoch cap of the search space.
        baselines: other methods' best scores in the same study family.
        guards: guarded search: each guardrail spec -> posterior probability it holds at this mixture
            (change vs the natural mixture's prediction).
        p_beats: posterior probability that this mixture's target is better than a reference's:
            "natural" (the natural mixture) and "METHOD (STUDY)" (the best baseline's best trial).
    """

    mixture: Mixture
    atlas_fingerprint: str | None
    centroids_fingerprint: str | None
    target: Target | None = None
    prediction: Prediction | None = None
    observation: Observation | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, Any] = field(default_factory=dict)
    baselines: tuple[BaselineScore, ...] = ()
    guards: dict[str, float] = field(default_factory=dict)
    p_beats: dict[str, float] = field(default_factory=dict)

    @property
    def concepts(self) -> tuple[str, ...]:
        return self.mixture.concepts

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.mixture.tasks

    @property
    def weights_kt(self) -> np.ndarray:
        """(k, T) cell weights summing to 1."""
        return self.mixture.weights_kt

    @property
    def max_epochs(self) -> float | None:
        """The epoch cap the search used, if it had one (materialize uses it as its default)."""
        value = self.constraints.get("max_epochs")
        return None if value is None else float(value)

    def best_baseline(self) -> BaselineScore | None:
        """The baseline with the best value in the target's direction, or None without baselines."""
        if not self.baselines:
            return None
        return self._target_or_maximized().best(self.baselines, key=lambda b: b.value)

    def score(self) -> tuple[float, float | None] | None:
        """(value, sd) of the recipe in target units: the observed value if a trial measured it (sd from the
        surrogate when it has one), else the prediction; None when neither exists."""
        sd = None if self.prediction is None else self.prediction.sd
        if self.observation is not None:
            return self.observation.value, sd
        if self.prediction is not None:
            return self.prediction.mean, sd
        return None

    def gain_over_best_baseline(self) -> tuple[float, float | None, BaselineScore] | None:
        """(gain, sd, baseline): improvement of the recipe's score over the best baseline's, oriented so that
        positive is better (baseline - recipe for minimized targets); sd is the surrogate's sd."""
        best, score = self.best_baseline(), self.score()
        if best is None or score is None:
            return None
        return self._target_or_maximized().gain(score[0], best.value), score[1], best

    def _target_or_maximized(self) -> Target:
        """The recipe's target; a recipe without one compares values as larger-is-better."""
        return self.target if self.target is not None else Target((("value", 1.0),), minimize=False)

    def with_transfer(self, mixture: Mixture, atlas_fingerprint: str | None,
                      centroids_fingerprint: str | None, note: dict[str, Any]) -> Recipe:
        """A copy on another atlas: new weights and fingerprints, the transfer appended to provenance.

        The prediction and observation stay: the transfer note (from/to atlas) says they were made on the
        old corpus.
        """
        provenance = dict(self.provenance)
        provenance["transfers"] = [*self.provenance.get("transfers", []), note]
        return replace(self, mixture=mixture, atlas_fingerprint=atlas_fingerprint,
                       centroids_fingerprint=centroids_fingerprint, provenance=provenance)

    def facts(self) -> list[tuple[str, str]]:
        """(label, text) lines: target, prediction, observation, baseline gain, provenance, constraints."""
        prov = self.provenance
        facts = []
        if self.target is not None:
            facts.append(("target", f"{self.target.spec} ({self.target.direction})"))
        if self.prediction is not None:
            sd = "" if self.prediction.sd is None else f" ± {self.prediction.sd:.3g}"
            facts.append(("prediction", f"{self.prediction.mean:.4g}{sd} ({self.prediction.source})"))
        if self.observation is not None:
            facts.append(("observed", f"{self.observation.value:.4g} (trial {self.observation.trial_id})"))
        gain = self.gain_over_best_baseline()
        if gain is not None:
            sd = "" if gain[1] is None else f" ± {gain[1]:.3g}"
            facts.append(("best baseline", f"{gain[2].value:.4g} ({gain[2].method}, {gain[2].mode} axis)"))
            facts.append(("gain over it", f"{gain[0]:+.4g}{sd} (positive = better)"))
        for name, p in self.p_beats.items():
            facts.append((f"P(beats {name})", f"{p:.3f} (posterior)"))
        for spec, p in self.guards.items():
            facts.append((f"guard {spec}", f"holds with P {p:.3f} (vs the natural mixture)"))
        if len(self.guards) > 1:
            facts.append(("all guards", f"hold with P {float(np.prod(list(self.guards.values()))):.3f}"))
        for key in ("study", "method", "mode", "chosen", "seed", "budget", "n_finished"):
            if key in prov:
                facts.append((key, str(prov[key])))
        for note in prov.get("transfers", []):
            facts.append(("transfer", str(note.get("summary", note))))
        if self.constraints:
            facts.append(("constraints", ", ".join(f"{k}={v}" for k, v in self.constraints.items())))
        facts.append(("atlas", str(self.atlas_fingerprint)))
        return facts

    # ---- YAML -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The YAML document (plain types only)."""
        w = self.weights_kt
        return {
            "mixatlas_recipe": RECIPE_VERSION,
            "concepts": list(self.concepts),
            "tasks": list(self.tasks),
            "weights": [[float(v) for v in row] for row in w],
            "concept_marginal": {c: float(v) for c, v in zip(self.concepts, w.sum(axis=1), strict=True)},
            "task_marginal": {t: float(v) for t, v in zip(self.tasks, w.sum(axis=0), strict=True)},
            "atlas": {"fingerprint": self.atlas_fingerprint,
                      "centroids_fingerprint": self.centroids_fingerprint},
            "target": None if self.target is None else {"spec": self.target.spec,
                                                       "minimize": self.target.minimize},
            "prediction": None if self.prediction is None else {
                "mean": self.prediction.mean, "sd": self.prediction.sd, "source": self.prediction.source},
            "observation": None if self.observation is None else {
                "trial_id": self.observation.trial_id, "value": self.observation.value},
            "provenance": _plain(self.provenance),
            "constraints": _plain(self.constraints),
            "baselines": [_plain(vars(b)) for b in self.baselines],
            "guards": {str(k): float(v) for k, v in self.guards.items()},
            "p_beats": {str(k): float(v) for k, v in self.p_beats.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, origin: str = "recipe") -> Recipe:
        """Inverse of :meth:`to_dict`; `origin` names the file in error messages."""
        if not isinstance(data, dict) or "weights" not in data:
            raise MixAtlasError(
                f"{origin}: not a MixAtlas recipe (no 'weights'); make one with `mixatlas recipe`"
            )
        mixture = Mixture.from_dict(data, origin=origin)
        atlas = data.get("atlas") or {}
        if not isinstance(atlas, dict):
            raise MixAtlasError(f"{origin}: field 'atlas' must be a mapping (fingerprint, "
                                f"centroids_fingerprint), not {type(atlas).__name__}; regenerate it with "
                                "`mixatlas recipe`")
        target = data.get("target")
        prediction = data.get("prediction")
        observation = data.get("observation")
        try:
            recipe = cls(
                mixture=mixture,
                atlas_fingerprint=atlas.get("fingerprint"),
                centroids_fingerprint=atlas.get("centroids_fingerprint"),
                target=None if not target else Target.parse(target["spec"], bool(target.get("minimize"))),
                prediction=None if not prediction else Prediction(
                    float(prediction["mean"]),
                    None if prediction.get("sd") is None else float(prediction["sd"]),
                    str(prediction.get("source", ""))),
                observation=None if not observation else Observation(
                    int(observation["trial_id"]), float(observation["value"])),
                provenance=dict(data.get("provenance") or {}),
                constraints=dict(data.get("constraints") or {}),
                baselines=tuple(BaselineScore(**b) for b in data.get("baselines") or []),
                guards=_probabilities(data.get("guards"), "guards"),
                p_beats=_probabilities(data.get("p_beats"), "p_beats"),
            )
            if recipe.max_epochs is not None and not 0 < recipe.max_epochs < math.inf:
                raise ValueError(f"constraints.max_epochs is {recipe.max_epochs}, expected a positive number")
            return recipe
        except (KeyError, TypeError, ValueError) as exc:
            raise MixAtlasError(
                f"{origin}: malformed recipe field ({exc}); regenerate it with `mixatlas recipe`"
            ) from None

    def save(self, path: Path) -> None:
        """Write the YAML atomically (a crash never leaves half a recipe)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, width=110))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, atlas: Any = None, transfer: bool = False) -> Recipe:
        """Read a recipe; with `atlas`, refuse one made on another atlas unless `transfer` is set.

        `atlas` is a :class:`mixatlas.atlas.Atlas` (anything with `fingerprint`, `concepts`, `tasks`).
        """
        path = Path(path)
        try:
            data = safe_load(path.read_text())
        except OSError as exc:
            raise MixAtlasError(f"{path}: cannot read recipe ({exc.strerror}); check the path") from None
        except yaml.YAMLError as exc:
            raise MixAtlasError(f"{path}: invalid YAML ({str(exc).splitlines()[0]}); fix or regenerate it")\
                from None
        recipe = cls.from_dict(data, origin=str(path))
        if atlas is not None and not transfer:
            recipe.check_atlas(atlas, origin=str(path))
        return recipe

    def check_atlas(self, atlas: Any, origin: str = "recipe") -> None:
        """Raise MixAtlasError unless `atlas` is the atlas this recipe was made on (same cells; concept names
        may differ after `mixatlas atlas name`: `materialize` matches them by index)."""
        if self.atlas_fingerprint != atlas.fingerprint:
            raise MixAtlasError(
                f"{origin}: made on atlas {str(self.atlas_fingerprint)[:12]}, not on this atlas "
                f"({str(atlas.fingerprint)[:12]}); move it with `mixatlas recipe apply` or pass --transfer"
            )
        if len(atlas.concepts) != len(self.concepts) or tuple(atlas.tasks) != self.tasks:
            raise MixAtlasError(f"{origin}: its concepts/tasks differ from the atlas's; regenerate it")


def _probabilities(value: Any, name: str) -> dict[str, float]:
    """A {name: probability} field (absent in older recipes: {}); ValueError unless each is in [0, 1]."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping of name: probability")
    out = {str(k): float(v) for k, v in value.items()}
    bad = [k for k, v in out.items() if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"{name}.{bad[0]} is {out[bad[0]]}, expected a probability in [0, 1]")
    return out


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays, paths and tuples -> YAML-safe builtins."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def now_iso() -> str:
    """UTC timestamp for provenance records."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
