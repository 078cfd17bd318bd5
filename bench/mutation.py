"""Mutation score of the core modules (`make mutation`): mutmut plants small bugs; relevant tests must fail.

    .venv/bin/python bench/mutation.py                                   # every core group (hours on 2 cores)
    .venv/bin/python bench/mutation.py --group space                     # one group
    .venv/bin/python bench/mutation.py --only src/mixatlas/space/mixture.py --group space   # one file
    .venv/bin/python bench/mutation.py --group space --mutants 'mixatlas.space.parametrization.x__factor_box*'
                                                                         # only these mutants (e.g. survivors)

mutmut (3.x) runs in a scratch copy of src/, tests/ and pyproject.toml (it writes its `mutants/` tree there,
never in the working tree), mutates only the files of the chosen groups and runs, for each mutant, the
group's tests that reach the mutated function. Prints the counts and writes bench/out/mutation.json: the
score killed / (killed + survived + timeout + suspicious), the mutants no selected test reaches (listed
apart: they measure coverage, not test strength) and every survivor with its diff, to be judged equivalent,
harmless or a missing test. A bench, not a CI gate: the suite does not run it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
MUTMUT = Path(sys.executable).parent / "mutmut"

# Core modules (globs under the repository root) and the tests that guard them.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "space": (
        ["src/mixatlas/space/*.py"],
        [
            "tests/test_mixture.py",
            "tests/test_space.py",
            "tests/test_parametrization.py",
            "tests/test_feasibility.py",
            "tests/test_space_errors.py",
            "tests/test_space_mutants.py",
            "tests/test_factored_mutants.py",
        ],
    ),
    "search": (
        [
            "src/mixatlas/search/regmix.py",
            "src/mixatlas/search/gp_ucb.py",
            "src/mixatlas/search/design.py",
            "src/mixatlas/search/baselines.py",
            "src/mixatlas/search/recommend.py",
            "src/mixatlas/search/setup.py",
        ],
        [
            "tests/test_methods.py",
            "tests/test_study.py",
            "tests/test_noise.py",
            "tests/test_search_mutants.py",
        ],
    ),
    "materialize": (["src/mixatlas/recipe/materialize.py"], ["tests/test_materialize.py"]),
    "tasks": (
        ["src/mixatlas/atlas/tasks.py", "src/mixatlas/atlas/task_rules.py"],
        ["tests/test_tasks.py", "tests/test_tasks_mutants.py", "tests/test_audit.py"],
    ),
    "readers": (
        ["src/mixatlas/corpus/readers.py", "src/mixatlas/corpus/records.py"],
        ["tests/test_readers.py", "tests/test_readers_mutants.py", "tests/test_bad_input.py"],
    ),
    "proxy-data": (
        [
            "src/mixatlas/objectives/proxy/data.py",
            "src/mixatlas/objectives/proxy/tokenizer.py",
            "src/mixatlas/objectives/proxy/packing.py",
            "src/mixatlas/objectives/proxy/loss.py",
        ],
        ["tests/test_proxy_data.py", "tests/test_proxy_packing.py"],
    ),
}
COUNTED = ("killed", "survived", "timeout", "suspicious")


def _files(patterns: list[str]) -> list[str]:
    found = sorted({str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern)})
    return [f for f in found if not f.endswith("__init__.py")]


def _scratch_copy(work: Path, files: list[str], tests: list[str]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    lines = ["[mutmut]", "source_paths = src", "use_git_change_detection = false", "only_mutate ="]
    lines += [f"    {f}" for f in files]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    {t}" for t in tests]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -q"]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n")


def _mutmut(work: Path, *args: str, timeout: float | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [str(MUTMUT), *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"mutmut {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
            f"\n{proc.stderr[-2000:]}"
        )
    return proc.stdout


def _diff(work: Path, name: str) -> list[str]:
    shown = _mutmut(work, "show", name)
    return [
        line
        for line in shown.splitlines()
        if re.match(r"^[-+]\s", line) and not line.startswith(("---", "+++"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", action="append", choices=sorted(GROUPS), help="core group (repeatable)")
    parser.add_argument("--only", action="append", help="mutate only these files (glob, repeatable)")
    parser.add_argument(
        "--mutants", action="append", default=[], help="only mutants matching (glob, repeatable)"
    )
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the whole mutmut run")
    parser.add_argument("--json", type=Path, default=OUT / "mutation.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (for `mutmut browse`)")
    args = parser.parse_args()
    if not MUTMUT.exists():
        raise SystemExit(
            f"{MUTMUT} not found: install the extra (`pip install -e '.[mutation]' torch==2.13.0`)"
        )

    groups = args.group or sorted(GROUPS)
    files = _files([p for g in groups for p in GROUPS[g][0]])
    if args.only:
        files = [f for f in files if any(fnmatch.fnmatch(f, pattern) for pattern in args.only)]
    tests = sorted({t for g in groups for t in GROUPS[g][1] if (ROOT / t).exists()})
    if not files:
        raise SystemExit("no source file selected: check --group / --only")
    work = Path(tempfile.mkdtemp(prefix="mixatlas-mutation-"))
    started = time.monotonic()
    try:
        _scratch_copy(work, files, tests)
        _mutmut(work, "run", "--max-children", str(args.max_children), *args.mutants, timeout=args.timeout)
        _mutmut(work, "export-cicd-stats")
        stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
        status = dict(re.findall(r"^\s*(\S+): (.+)$", _mutmut(work, "results"), re.M))  # the non-killed
        survivors = [
            {"mutant": name, "diff": _diff(work, name)}
            for name, state in status.items()
            if state.strip() == "survived"
        ]
    finally:
        if args.keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    tested = sum(stats.get(k, 0) for k in COUNTED)
    score = stats["killed"] / tested if tested else float("nan")
    result = {
        "command": " ".join([Path(sys.executable).name, "bench/mutation.py", *sys.argv[1:]]),
        "tool": "mutmut "
        + subprocess.run([str(MUTMUT), "--version"], capture_output=True, text=True).stdout.split()[-1],
        "groups": groups,
        "files": files,
        "tests": tests,
        "stats": stats,
        "score": score,
        "score_definition": "killed / (killed + survived + timeout + suspicious)",
        "not_reached": stats.get("no_tests", 0),
        "partial": bool(args.only or args.mutants) or set(groups) != set(GROUPS),
        "seconds": round(time.monotonic() - started, 1),
        "survivors": survivors,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"mutation score {score:.1%}: {stats['killed']} killed of {tested} reached "
        f"({stats['survived']} survived, {stats.get('timeout', 0)} timeout, {stats.get('suspicious', 0)} "
        f"suspicious); {stats.get('no_tests', 0)} not reached by the selected tests; {len(files)} files, "
        f"{result['seconds']:.0f} s"
    )
    for survivor in survivors:
        print(f"  survived {survivor['mutant']}: " + " | ".join(survivor["diff"]))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
