"""Audit an atlas's task typing: which rule typed how many samples, with sample prompts; mixed and
low-confidence samples; and a source / image-folder -> task map that fixes the typing.

`audit_atlas` streams samples.parquet one row group at a time (memory: counts plus `n` examples per
list). Atlases written before the `task_rule` / `task_mix` columns are re-typed with their own
`task_rules` spec. `export_map` writes the per-source and per-image-folder majority tasks as a YAML map
(`sources:`, `images:`): rebuilding with `--tasks map:FILE` gives every exported source, then every
exported folder, its majority task and leaves the others as they were. Folders matter for one-file corpora
(LLaVA-1.5's mix is one source; its coco/, gqa/, ocr_vqa/ folders are not).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixatlas.atlas.task_rules import LOW_CONFIDENCE_RULES
from mixatlas.corpus.sample import TASKS, Sample, turn_pairs
from mixatlas.errors import MixAtlasError

PROMPT_CHARS = 160
DEFAULT_MIN_SHARE = 0.9


@dataclass
class _Reservoir:
    """Up to `n` items drawn uniformly from a stream (seeded, so an audit prints the same examples)."""

    n: int
    rng: random.Random
    items: list = field(default_factory=list)
    seen: int = 0

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.n:
            self.items.append(item)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.n:
                self.items[slot] = item


@dataclass
class TaskAudit:
    """One task: its sample count, counts per deciding rule, example prompts per rule."""

    n: int = 0
    rules: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    mixed: int = 0
    low_confidence: int = 0


@dataclass
class AuditReport:
    """What `audit_atlas` found. `sources[source][task]` and `folders[image folder][task]` count samples;
    `mixed` / `low_confidence` hold up to n examples each (`{"id", "source", "task", "rule", "mix",
    "prompt"}`)."""

    atlas: str
    task_rules: str
    n_samples: int
    tasks: dict[str, TaskAudit]
    sources: dict[str, Counter]
    folders: dict[str, Counter]
    mixed: list[dict]
    low_confidence: list[dict]
    retyped: bool

    def to_json(self) -> dict:
        """A JSON-ready dict (what `mixatlas atlas audit --json` prints)."""
        return {
            "atlas": self.atlas, "task_rules": self.task_rules, "n_samples": self.n_samples,
            "retyped": self.retyped,
            "tasks": {task: {"n": audit.n, "rules": dict(audit.rules.most_common()),
                             "examples": audit.examples, "mixed": audit.mixed,
                             "low_confidence": audit.low_confidence}
                      for task, audit in self.tasks.items()},
            "sources": {source: dict(counts.most_common()) for source, counts in self.sources.items()},
            "source_map": source_map(self), "folder_map": folder_map(self),
            "mixed": self.mixed, "low_confidence": self.low_confidence,
        }


def is_low_confidence(rule: str) -> bool:
    """Whether a `task_rule` value is a guess (a default, a weak cue) rather than a cue, map or label."""
    return rule in LOW_CONFIDENCE_RULES


def first_prompt(conversations_json: str) -> str:
    """The first human turn of a stored conversation, shortened to `PROMPT_CHARS` on one line."""
    try:
        pairs = turn_pairs(json.loads(conversations_json))
    except (TypeError, ValueError):
        return ""
    text = " ".join((pairs[0][0] if pairs else "").split())
    return text if len(text) <= PROMPT_CHARS else text[:PROMPT_CHARS - 1] + "…"


def audit_atlas(atlas_dir: Path | str, task: str | None = None, n: int = 20, seed: int = 0) -> AuditReport:
    """Audit the typing of the atlas at `atlas_dir`, optionally of one `task` only; `n` examples per list."""
    import pyarrow.parquet as pq

    from mixatlas.atlas.folder import Atlas

    if task is not None and task not in TASKS:
        raise MixAtlasError(f"--task {task}: unknown task; use one of {', '.join(TASKS)}")
    if n < 1:
        raise MixAtlasError(f"--n {n}: pass a positive number of examples")
    atlas = Atlas.load(atlas_dir)
    parquet = pq.ParquetFile(atlas.dir / "samples.parquet")
    stored = set(parquet.schema_arrow.names)
    retyped = not {"task_rule", "task_mix"} <= stored
    typer = None
    if retyped:
        from mixatlas.atlas.tasks import TaskTyper

        typer = TaskTyper.from_spec(atlas.info.task_rules)
    rng = random.Random(seed)
    tasks = {name: TaskAudit() for name in TASKS if task in (None, name)}
    examples: dict[tuple[str, str], _Reservoir] = {}
    mixed, low = _Reservoir(n, rng), _Reservoir(n, rng)
    sources: dict[str, Counter] = {}
    folders: dict[str, Counter] = {}
    columns = ["id", "source", "image", "task", "conversations"]
    columns += [] if retyped else ["task_rule", "task_mix"]
    total = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=8192):
        for row in batch.to_pylist():
            total += 1
            if typer is not None:
                typing = typer.type(Sample(id=row["id"], source=row["source"], image=row["image"],
                                           conversations=json.loads(row["conversations"])))
                row["task"], row["task_rule"], row["task_mix"] = typing.task, typing.rule, typing.mix
            sources.setdefault(row["source"], Counter())[row["task"]] += 1
            folder = os.path.dirname(row["image"] or "")
            if folder:
                folders.setdefault(folder, Counter())[row["task"]] += 1
            if row["task"] not in tasks:
                continue
            _count(row, tasks[row["task"]], examples, mixed, low, n, rng)
    for (name, rule), reservoir in examples.items():
        tasks[name].examples[rule] = reservoir.items
    for audit in tasks.values():
        audit.examples = {rule: audit.examples[rule] for rule, _ in audit.rules.most_common()}
    for audit in tasks.values():
        audit.examples = {rule: [first_prompt(c) for c in items] for rule, items in audit.examples.items()}
    for item in mixed.items + low.items:
        item["prompt"] = first_prompt(item["prompt"])
    return AuditReport(str(atlas.dir), atlas.info.task_rules, total, tasks, sources, folders, mixed.items,
                       low.items, retyped)


def _count(row: dict, audit: TaskAudit, examples: dict, mixed: _Reservoir, low: _Reservoir, n: int,
           rng: random.Random) -> None:
    rule, mix = row["task_rule"] or "", row["task_mix"] or ""
    audit.n += 1
    audit.rules[rule] += 1
    is_mixed = mix.count(":") > 1
    is_low = is_low_confidence(rule)
    reservoir = examples.get((row["task"], rule))
    if reservoir is None:
        reservoir = examples[(row["task"], rule)] = _Reservoir(min(n, 3), rng)
    reservoir.offer(row["conversations"])
    if not (is_mixed or is_low):
        return
    item = {"id": row["id"], "source": row["source"], "task": row["task"], "rule": rule, "mix": mix,
            "prompt": row["conversations"]}
    if is_mixed:
        audit.mixed += 1
        mixed.offer(item)
    if is_low:
        audit.low_confidence += 1
        low.offer(item)


def _majorities(groups: dict[str, Counter], min_share: float) -> dict[str, dict]:
    rows = {}
    for name, counts in sorted(groups.items()):
        task, count = counts.most_common(1)[0]
        share = count / sum(counts.values())
        rows[name] = {"task": task, "share": round(share, 4), "n": sum(counts.values()),
                      "mapped": share >= min_share}
    return rows


def source_map(report: AuditReport, min_share: float = DEFAULT_MIN_SHARE) -> dict[str, dict]:
    """Per source: its majority task, that task's share, and whether the share reaches `min_share`
    (then the export maps the source to the task)."""
    return _majorities(report.sources, min_share)


def folder_keys(folders: list[str]) -> dict[str, str]:
    """Each image folder's map key: its path under the folders' common parent (`coco/train2017`), which
    the `images:` reader matches as a folder inside any image path; one folder: its own name."""
    if not folders:
        return {}
    try:
        base = os.path.commonpath(folders)
    except ValueError:  # absolute and relative paths together: keep whole paths
        base = ""
    if not base or base in folders:
        base = os.path.dirname(base)
    return {folder: os.path.relpath(folder, base).replace(os.sep, "/") if base else folder.strip("/")
            for folder in folders}


def folder_map(report: AuditReport, min_share: float = DEFAULT_MIN_SHARE) -> dict[str, dict]:
    """Per image folder (keyed as in `folder_keys`): majority task, share, whether it is exported."""
    keys = folder_keys(sorted(report.folders))
    return _majorities({keys[folder]: counts for folder, counts in report.folders.items()}, min_share)


def export_map(report: AuditReport, path: Path | str,
               min_share: float = DEFAULT_MIN_SHARE) -> dict[str, dict[str, str]]:
    """Write a `--tasks map:` YAML: each source, then each image folder, whose majority task holds at least
    `min_share` of its samples maps to that task; the others are written as comments (they keep their
    current typing). Returns the mapped entries, `{"sources": {...}, "images": {...}}`."""
    import yaml

    if not 0 < min_share <= 1:
        raise MixAtlasError(f"--min-share {min_share}: pass a share in (0, 1]")
    lines = [f"# Source / image folder -> task map exported by `mixatlas atlas audit` from {report.atlas}",
             f"# (typed with --tasks {report.task_rules}). Sources and folders whose majority task holds >= "
             f"{min_share:.0%} of their samples are mapped;",
             "# the commented ones keep their current typing. A sample's source entry comes first, then its",
             "# image folder's. Edit, then rebuild with --tasks map:THIS_FILE",
             "# (add the atlas's own map parts after it, comma-joined, to keep them)."]
    mapped = {}
    sections = (("sources", source_map(report, min_share)), ("images", folder_map(report, min_share)))
    for section, rows in sections:
        mapped[section] = {name: row["task"] for name, row in rows.items() if row["mapped"]}
        lines.append(f"{section}:")
        for name, row in rows.items():
            entry = yaml.safe_dump({name: row["task"]}, allow_unicode=True, width=1000).strip()
            note = f"  # {row['share']:.0%} of {row['n']}"
            lines.append(f"  {entry}{note}" if row["mapped"] else f"  # {entry}{note}, mixed: left to rules")
    parts = [part.strip() for part in report.task_rules.split(",")]
    if not any(part == "auto" or part.startswith(("field:", "map:")) for part in parts):
        lines.append("shipped: false  # the atlas was typed without the known-corpus map")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mapped


def summary(report: AuditReport, top: int = 3) -> list[dict]:
    """One row per task for reports: samples, share, the `top` deciding rules with counts, mixed and
    low-confidence counts."""
    total = max(report.n_samples, 1)
    return [{"task": task, "samples": audit.n, "share": audit.n / total,
             "rules": ", ".join(f"{rule} {count}" for rule, count in audit.rules.most_common(top)),
             "mixed": audit.mixed, "low_confidence": audit.low_confidence}
            for task, audit in report.tasks.items()]
