"""Progress bars for long work, on stderr so stdout stays the report."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

# `exporter --quiet`: no status lines or progress bars; warnings and errors still print.
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def _console():
    from rich.console import Console

    return Console(stderr=True)


def make_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=_console(),
        transient=not sys.stderr.isatty(),
        disable=_quiet or not sys.stderr.isatty(),
    )


def progress_iter(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    total = len(items) if total is None else total
    with make_progress() as bar:
        task = bar.add_task(description, total=total, info="")
        for item in items:
            yield item
            bar.advance(task)


def say(message: str) -> None:
    """A status line for the user (stderr), e.g. 'training unet on synthetic data'. With --quiet
    only warnings ("warning: ...") still print."""
    if _quiet and not message.startswith("warning"):
        return
    print(message, file=sys.stderr, flush=True)
