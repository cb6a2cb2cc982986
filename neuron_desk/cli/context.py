"""What every command needs: the desk (opened on first use), exit codes and argument types."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from neuron_desk.core.errors import (
    CodecError,
    NeuronOutOfRange,
    ReadOnlyDataset,
    UnknownDataset,
)

if TYPE_CHECKING:
    from neuron_desk.desk import Desk

T = TypeVar("T")

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2


def exit_code_of(exc: BaseException) -> int:
    """2 for bad arguments or input; 1 for everything else (not found, offline, failures)."""
    if isinstance(
        exc, CodecError | NeuronOutOfRange | UnknownDataset | ReadOnlyDataset | ValueError
    ):
        return EXIT_BAD_INPUT
    return EXIT_NOT_FOUND


def parse_range(text: str) -> tuple[int, int]:
    """ "5" or "0-99" as (first, last), for argparse."""
    first, _, last = text.partition("-")
    try:
        start, end = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or range: {text!r}") from None
    if end < start:
        raise argparse.ArgumentTypeError(f"empty range: {text!r}")
    return start, end


def positive_int(text: str) -> int:
    """An integer of at least 1, for argparse (a concurrency of 0 would wait forever)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    """A number above 0, for argparse (budgets: to run without a cap, leave the flag out)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0 (leave the flag out for no cap)")
    return value


class Context:
    """The desk shared by the commands of one invocation, opened on first use."""

    def __init__(self) -> None:
        self._desk: Desk | None = None

    @property
    def desk(self) -> Desk:
        """The user's desk (its store is created on first use)."""
        if self._desk is None:
            from neuron_desk.desk import Desk  # the whole stack: only for a command that runs

            self._desk = Desk.open()
        return self._desk

    def run(self, work: Callable[[Desk], Awaitable[T]], *, offline: bool = False) -> T:
        """Run `work(desk)` in an event loop; the desk's clients are closed before it ends."""
        desk = self.desk
        desk.offline = offline

        async def run() -> T:
            try:
                return await work(desk)
            finally:
                await desk.aclose()

        return asyncio.run(run())

    def close(self) -> None:
        """Close what was opened."""
        if self._desk is not None:
            self._desk.close()
