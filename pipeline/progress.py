"""Progress as the CLI shows it, for the CLI and for `xlembed.run(progress=True)`:
bars on a terminal, plain lines with rate and ETA in a log, on stderr; or a
callback of the caller's."""

import contextlib
import os
import threading
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .io import SilentTask

err = Console(stderr=True, soft_wrap=True, highlight=False)


class RateColumn(ProgressColumn):
    """Items per second, in the unit the task was given."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{_rate(speed)} {task.fields.get('unit', '')}/s" if speed else "", style="progress.data.speed")


def _rate(per_second: float) -> str:
    """A rate to three significant digits below 100 (0.0123 shards/s), whole above (4,951 words/s)."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LogTask:
    """Progress for a log (stderr not a terminal): a plain line with count,
    rate, elapsed time and ETA at each 10 % of the work, but no more often
    than every `min_gap` seconds, and at least every `interval` seconds.
    Short tasks print nothing but their summary. XLEMBED_PROGRESS_INTERVAL
    sets `interval` (seconds)."""

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str,
        interval: float | None = None,
        min_gap: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.description, self.total, self.unit, self.clock = description, total, unit, clock
        self.interval = interval if interval is not None else float(os.environ.get("XLEMBED_PROGRESS_INTERVAL", 30))
        self.min_gap = min_gap if min_gap is not None else min(5.0, self.interval)
        self.done = 0
        self.lock = threading.Lock()
        self.start = self.last = clock()
        self.next_fraction = 0.1

    def advance(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            now = self.clock()
            fraction = self.done / self.total if self.total else 0.0
            at_mark = bool(self.total) and fraction >= self.next_fraction and self.done < self.total
            if now - self.last >= self.interval or (at_mark and now - self.last >= self.min_gap):
                self.last = now
                while self.total and fraction >= self.next_fraction:
                    self.next_fraction += 0.1
                err.print(escape(self.line(now)))

    def tick(self) -> None:
        """A line if none came for `interval` seconds, however long a step
        takes without advancing (eflomal's one run, for instance)."""
        with self.lock:
            now = self.clock()
            if now - self.last >= self.interval:
                self.last = now
                err.print(escape(self.line(now)))

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Call tick() every `interval` seconds on a thread while the block runs
        (interval 0: every advance prints already, no thread)."""
        if self.interval <= 0:
            yield
            return
        stop = threading.Event()

        def beat():
            while not stop.wait(self.interval):
                self.tick()

        thread = threading.Thread(target=beat, name="progress heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def line(self, now: float) -> str:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        line = f"{self.description}: {self.done:,}"
        if self.total:
            line += f"/{self.total:,} {self.unit} ({self.done / self.total:.0%})"
        elif self.unit:
            line += f" {self.unit}"
        if self.unit:
            line += f", {_rate(rate)} {self.unit}/s"
        line += f", elapsed {_duration(elapsed)}"
        if self.total and rate > 0:
            line += f", eta {_duration((self.total - self.done) / rate)}"
        return line


class Reporter:
    """Progress with count, rate, elapsed time and ETA on stderr: bars on a
    terminal (tasks running at the same time, encode and align in `run`,
    share one display), plain lines in a log."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.terminal = err.is_terminal
        self.lock = threading.Lock()
        self.progress: Progress | None = None
        self.active = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str):
        if self.quiet:
            yield SilentTask()
            return
        if not self.terminal:
            task = LogTask(description, total, unit)
            with task.heartbeat():
                yield task
            return
        with self.lock:
            if self.progress is None:
                self.progress = Progress(
                    SpinnerColumn(),
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    RateColumn(),
                    TimeElapsedColumn(),
                    TextColumn("{task.fields[eta]}"),
                    TimeRemainingColumn(),
                    console=err,
                )
                self.progress.start()
            task_id = self.progress.add_task(description, total=total, unit=unit, eta="eta" if total else "")
            self.active += 1
        progress = self.progress

        class Task:
            def advance(self, n: int = 1) -> None:
                progress.advance(task_id, n)

        try:
            yield Task()
        finally:
            with self.lock:
                if total is None:
                    progress.update(task_id, total=1, completed=1)
                self.active -= 1
                if self.active == 0:
                    progress.stop()
                    self.progress = None


class CallbackReporter:
    """Progress to a function of the caller's: `callback(description, done,
    total, unit)` after each step of a task (total None: unknown)."""

    def __init__(self, callback: Callable[[str, int, int | None, str], None]):
        self.callback = callback

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str):
        callback = self.callback

        class Task:
            done = 0

            def advance(self, n: int = 1) -> None:
                self.done += n
                callback(description, self.done, total, unit)

        yield Task()


def reporter_for(progress: "bool | Callable[[str, int, int | None, str], None]"):
    """True: the CLI's bars (a terminal) or lines (a log) on stderr; a
    function: called as CallbackReporter says; False: nothing."""
    if progress is True:
        return Reporter(quiet=False)
    if callable(progress):
        return CallbackReporter(progress)
    return Reporter(quiet=True)
