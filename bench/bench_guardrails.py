"""Guarded search on an analytic problem: does the recommendation keep the guardrails, with the stated
probability, and how much target does it give up?

A pool of 300 mixtures of 5 domains; the target peaks in one corner, two guard metrics peak elsewhere, so
the unconstrained optimum breaks both guards ("no more than 0.03 below the natural mixture"). Noisy
observations (sd 0.01). Methods at equal budget: gp-guarded (constrained EI x probability of
feasibility) and plain gp-ucb (which ignores the guards).

    .venv/bin/python bench/bench_guardrails.py --seeds 6      # table + bench/out/guardrails.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mixatlas.report.figures import guard_front
from mixatlas.search.base import History
from mixatlas.search.benchmark import t_interval
from mixatlas.search.guardrails import Guard, GuardedGPUCB, GuardedHistory
from mixatlas.search.methods import make_optimizer
from mixatlas.space import MixtureSpace

OUT = Path(__file__).resolve().parent / "out"
PEAKS = np.array([[0.7, 0.1, 0.1, 0.05, 0.05], [0.05, 0.05, 0.5, 0.3, 0.1], [0.1, 0.05, 0.05, 0.4, 0.4]])
GUARDS = (Guard.parse("g1>=-0.03"), Guard.parse("g2>=-0.03"))
NOISE = 0.01


def metrics(w: np.ndarray) -> np.ndarray:
    """(n, 3) noiseless target, g1, g2 at (n, 5) mixtures: negative squared distances to the peaks."""
    return -((np.atleast_2d(w)[:, None, :] - PEAKS[None]) ** 2).sum(axis=2)


def run(method: str, seed: int, budget: int, pool: np.ndarray) -> dict:
    space = MixtureSpace.from_domains([f"d{i}" for i in range(5)], candidates=pool)
    rng = np.random.default_rng([seed, 99])
    done, observed = np.empty((0, 5)), np.empty((0, 3))
    guarded = GuardedGPUCB(p_feasible=0.9) if method == "gp-guarded" else None
    plain = None if guarded else make_optimizer(method)

    def histories() -> tuple[History, GuardedHistory]:
        h = History(space, done, observed[:, 0], np.empty((0, 5)), budget, seed)
        return h, GuardedHistory(h, GUARDS, observed[:, 1:])

    while len(done) < budget:
        h, gh = histories()
        params = (guarded.ask(gh, 1) if guarded else plain.ask(h, 1))[0]
        done = np.vstack([done, params])
        observed = np.vstack([observed, metrics(params) + NOISE * rng.standard_normal(3)])
    h, gh = histories()
    if guarded:
        result = guarded.recommend(gh)
        params, p_all = result.recommendation.params, result.p_all
    else:
        params, p_all = plain.recommend(h).params, None
    truth, ref = metrics(params)[0], metrics(space.natural_params())[0]
    held = all(g.holds(truth[i + 1], ref[i + 1]) for i, g in enumerate(GUARDS))
    evaluated = metrics(done) - ref[None]  # (budget, 3) true changes vs natural of every trial
    chosen = int(np.argmin(np.abs(done - params[None]).sum(axis=1)))
    return {
        "target_gain": float(truth[0] - ref[0]),
        "held": held,
        "p_all": p_all,
        "evaluated_change": evaluated.tolist(),
        "chosen": chosen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--budget", type=int, default=16)
    args = parser.parse_args()
    pool = np.random.default_rng(0).dirichlet(np.ones(5), size=300)
    truth, ref = metrics(pool), metrics(np.full(5, 0.2))[0]
    feasible = np.all(truth[:, 1:] - ref[1:] >= -0.03, axis=1)
    best_feasible_gain = float(truth[feasible, 0].max() - ref[0])
    print(
        f"pool 300, {feasible.sum()} feasible; best feasible target gain {best_feasible_gain:.4f}, "
        f"unconstrained {truth[:, 0].max() - ref[0]:.4f}"
    )
    out = {
        "budget": args.budget,
        "seeds": args.seeds,
        "guards": [g.spec for g in GUARDS],
        "best_feasible_gain": best_feasible_gain,
        "methods": {},
    }
    print(f"{'method':<12}{'target gain':>12}{'95% CI':>20}{'guards held':>13}{'stated P(all)':>15}")
    for method in ("gp-guarded", "gp-ucb"):
        runs = [run(method, seed, args.budget, pool) for seed in range(args.seeds)]
        gain = t_interval([r["target_gain"] for r in runs])
        held = float(np.mean([r["held"] for r in runs]))
        stated = [r["p_all"] for r in runs if r["p_all"] is not None]
        out["methods"][method] = {
            "target_gain_mean": gain[0],
            "target_gain_ci95": [gain[1], gain[2]],
            "held_fraction": held,
            "stated_p_all_mean": float(np.mean(stated)) if stated else None,
            "runs": runs,
        }
        stated_text = f"{np.mean(stated):.2f}" if stated else "-"
        print(
            f"{method:<12}{gain[0]:>12.4f}{f'[{gain[1]:.4f}, {gain[2]:.4f}]':>20}"
            f"{held:>13.2f}{stated_text:>15}"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "guardrails.json").write_text(json.dumps(out, indent=1))
    first = out["methods"]["gp-guarded"]["runs"][0]
    change = np.asarray(first["evaluated_change"])
    worst_guard = change[:, 1:].min(axis=1)  # the binding guard of each trial
    figure = guard_front(
        change[:, 0],
        worst_guard,
        GUARDS[0].delta,
        OUT / "guardrails-front.png",
        chosen=first["chosen"],
        xlabel="worst guard change vs natural (seed 0)",
    )
    print(f"wrote {OUT / 'guardrails.json'} and {figure}")


if __name__ == "__main__":
    main()
