"""Run every benchmark program (`make bench`): each bench/*.py, then the `mixatlas bench` subcommands.

    .venv/bin/python bench/run_all.py           # measured runs: each program's defaults -> bench/out/*.json
    .venv/bin/python bench/run_all.py --quick   # every program on small sizes (minutes): a smoke run

Full runs write the figures the README quotes (bench/out/*.json) and take hours on CPU (bench_search.py
also runs what `mixatlas bench synthetic|public|overhead` run, so full mode does not repeat them). Quick
runs execute copies of the programs in a scratch folder, so they never overwrite measured figures; their
JSON lands in bench/out/quick/. Every bench/*.py must have an entry in QUICK (a new program is added there
once), GPU-only ones are marked so. Prints one table line per program and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
# Small sizes of each program; None = needs a GPU (run by bench/gpu/*.sh on a GPU machine).
QUICK: dict[str, list[str] | None] = {
    "bench_atlas.py": ["--n", "20000", "--images", "60"],
    "bench_decompose_sample.py": ["--n", "3000", "--sample", "1000", "--k", "4", "--pool", "32"],
    "bench_embed.py": ["--tiny", "--images", "48", "--width", "64", "--height", "48", "--workers", "2",
                       "--batch-size", "16", "--repeats", "1"],
    "bench_fidelity.py": ["--seeds", "1", "--problems", "5mix-sizes", "--targets", "valid_avg"],
    "bench_guardrails.py": ["--seeds", "2", "--budget", "8"],
    "bench_materialize.py": ["--rows", "20000", "--samples", "20000"],
    "bench_proxy.py": ["--response", "--seeds", "2", "--steps", "5", "--samples", "200", "--k", "3",
                       "--eval-samples", "8"],
    "bench_search.py": ["--quick"],
    "bench_synth.py": ["--samples", "100"],
    "bench_typing.py": ["--samples", "100"],
}
# `mixatlas bench` subcommands on small sizes (quick mode only); {out} is the JSON folder.
CLI_QUICK: dict[str, list[str]] = {
    "bench synthetic": ["bench", "synthetic", "--space", "task", "--budget", "8", "--seeds", "2",
                        "--methods", "gp-ucb,random", "--json", "{out}/cli_synthetic.json"],
    "bench overhead": ["bench", "overhead", "--trials", "30", "--methods", "gp-ucb,regmix",
                       "--json", "{out}/cli_overhead.json"],
}


def _run(name: str, argv: list[str], cwd: Path, timeout_s: float) -> dict:
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
        ok, tail = proc.returncode == 0, (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    except subprocess.TimeoutExpired:
        ok, tail = False, [f"timed out after {timeout_s:g} s"]
    return {"program": name, "ok": ok, "seconds": round(time.monotonic() - started, 1), "last_line": tail[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, scratch copies, bench/out/quick/")
    parser.add_argument("--only", nargs="*", default=None, help="program names (e.g. bench_atlas.py)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per program (quick: 900)")
    args = parser.parse_args()

    programs = sorted(p.name for p in BENCH.glob("bench_*.py"))
    missing = [p for p in programs if p not in QUICK]
    if missing:
        sys.exit(f"bench/run_all.py: add {missing} to QUICK (small-size arguments, or None for GPU-only)")
    chosen = [p for p in programs if args.only is None or p in args.only]
    timeout_s = args.timeout or (900.0 if args.quick else 24 * 3600.0)
    rows = []
    if args.quick:
        out = OUT / "quick"
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mixatlas-bench-") as scratch:
            work = Path(scratch) / "bench"
            work.mkdir()
            for program in programs:
                shutil.copy(BENCH / program, work / program)
            (work / "out").mkdir()
            for entry in BENCH.parent.iterdir():  # the repo's other folders (test data, examples) as they are
                if entry.name != "bench":
                    (Path(scratch) / entry.name).symlink_to(entry)
            for program in chosen:
                if QUICK[program] is None:
                    rows.append({"program": program, "ok": None, "seconds": 0.0, "last_line": "GPU only"})
                    continue
                argv = [sys.executable, str(work / program), *QUICK[program]]
                rows.append(_run(program, argv, Path(scratch), timeout_s))
                print(json.dumps(rows[-1]), flush=True)
            for name, argv in CLI_QUICK.items():
                if args.only is None:
                    cli = [sys.executable, "-c", "from mixatlas.cli import main; main()",
                           *(a.format(out=work / "out") for a in argv)]
                    rows.append(_run(name, cli, Path(scratch), timeout_s))
                    print(json.dumps(rows[-1]), flush=True)
            for produced in (work / "out").rglob("*.json"):
                shutil.copy(produced, out / produced.name)
    else:
        out = OUT
        for program in chosen:
            if QUICK[program] is None:
                continue
            rows.append(_run(program, [sys.executable, str(BENCH / program)], BENCH.parent, timeout_s))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'program':<28} {'result':<8} {'seconds':>8}  last line")
    for row in rows:
        result = "skipped" if row["ok"] is None else "ok" if row["ok"] else "FAILED"
        print(f"{row['program']:<28} {result:<8} {row['seconds']:>8.1f}  {row['last_line'][:70]}")
    (out / "run_all.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out / 'run_all.json'}")
    if any(row["ok"] is False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
