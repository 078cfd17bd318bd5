"""Progress bars and printing for every layer: one rich console on stderr (stdout stays for data).

Library code shows progress through `progress_bar`; the CLI and the demo print through `console`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress(transient: bool = False) -> Progress:
    """A rich Progress with description, bar, done/total, elapsed and remaining time (to stderr)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


class Bar:
    """One task's handle on a progress bar: `bar(n)` advances it; `update` sets the count or the label.

    A hidden bar (`progress_bar(False, ...)`) accepts the same calls and shows nothing.
    """

    def __init__(self, progress_: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress, self._task = progress_, task

    def __call__(self, n: float = 1, description: str | None = None) -> None:
        if self._progress is not None:
            kwargs = {} if description is None else {"description": description}
            self._progress.update(self._task, advance=n, **kwargs)

    def update(self, completed: float | None = None, description: str | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, description=description)


@contextmanager
def progress_bar(
    show: bool, description: str, total: float | None = None, transient: bool = False
) -> Iterator[Bar]:
    """A rich progress bar on stderr when `show` (else a silent one); yields its `Bar`."""
    if not show:
        yield Bar()
        return
    with progress(transient=transient) as bar:
        yield Bar(bar, bar.add_task(description, total=total))
