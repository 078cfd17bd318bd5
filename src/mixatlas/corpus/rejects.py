"""The rejects list: every record or image that could not be used, with its file, place and reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO

from mixatlas.errors import MixAtlasError


def located(file: str | Path, where: int | str, reason: str) -> str:
    """One line for a reject: `FILE:LINE: REASON` (as editors take it), or `FILE, WHERE: REASON`."""
    return f"{file}:{where}: {reason}" if isinstance(where, int) else f"{file}, {where}: {reason}"


class Rejects:
    """Counts rejected records and appends each as one JSON line `{"file", "where", "reason"}`.

    `where` finds the record: the 1-based line number (JSONL, an int), or text: `element 12 (byte 3456,
    line 80)` (JSON array), `member s/003.png` (WebDataset), `row 300 (row group 1, index 44)` (Parquet).
    `path` is truncated when the object is made (a rebuild re-reads the whole corpus, so old entries
    would be stale); None keeps counts only. In `strict` mode the first reject raises
    `MixAtlasError` (see `located`) after being written.
    """

    def __init__(self, path: Path | None, strict: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.strict = strict
        self.count = 0
        self._reasons: Counter[str] = Counter()
        self._fh: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")

    def add(self, file: str | Path, where: int | str, reason: str) -> None:
        """Record one reject; `reason` reads `"kind: detail"` (the kind is what `by_reason` counts)."""
        self.count += 1
        self._reasons[reason.split(":", 1)[0].strip()] += 1
        if self._fh is not None:
            self._fh.write(json.dumps({"file": str(file), "where": where, "reason": reason}) + "\n")
            self._fh.flush()
        if self.strict:
            raise MixAtlasError(located(file, where, reason))

    def by_reason(self) -> dict[str, int]:
        """Reject counts per reason kind (the text before the first ':'), most frequent first."""
        return dict(self._reasons.most_common())

    def close(self) -> None:
        """Close the rejects file (counts stay readable)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Rejects:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
