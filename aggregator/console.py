"""Terminal output: rich tables, and a progress bar that shows only for runs over a second."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

err_console = Console(stderr=True)
out_console = Console()


class LazyProgress:
    """A callable progress sink: ``progress(n)`` advances by n units of ``total``.

    The bar appears only once the work has taken ``delay`` seconds, so quick runs print nothing.
    """

    def __init__(self, description: str, total: int, delay: float = 1.0, enabled: bool = True):
        self.description, self.total, self.delay, self.enabled = description, total, delay, enabled
        self.done = 0
        self.started = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is None and time.monotonic() - self.started >= self.delay:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=min(self.done, self.total))

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
