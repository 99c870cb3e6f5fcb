"""What a local run shows: one line per step, a live progress bar on a terminal, then the summary.

kfp's local runner copies each step's output, line by line, into the ``inspectflow`` process. Steps
report what the terminal should show as marker lines (:func:`emit`: a step starting or ending, progress, a
note for its line); :class:`RunConsole` turns those into the step lines and the progress bar and writes
everything else (kfp's executor input, library logs, warnings, tracebacks) to the run's log file, and to
the terminal too with ``-v``. ANSI codes reach only a terminal, and none when ``NO_COLOR`` is set.

This module imports only the standard library and, in the CLI process, tqdm: every step imports it.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from typing import IO, Any, TextIO

#: Set by :class:`RunConsole` for the steps: report to it with marker lines.
CONSOLE_ENV = "INSPECTFLOW_CONSOLE"
_MARKER = "::inspectflow::"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Progress lines are rate-limited: a step's batches can come faster than anyone reads.
_PROGRESS_INTERVAL_S = 0.5
_last_progress = 0.0


def emit(event: str, **fields: Any) -> None:
    """Reports ``event`` to the run's console, when there is one (a local run); otherwise does nothing."""
    if os.environ.get(CONSOLE_ENV):
        print(_MARKER + json.dumps({"event": event, **fields}), flush=True)


def progress(done: int, total: int, description: str, **postfix: float) -> None:
    """Reports progress of the running step (such as batches of an epoch), at most twice a second."""
    global _last_progress
    now = time.monotonic()
    if done < total and now - _last_progress < _PROGRESS_INTERVAL_S:
        return
    _last_progress = now
    emit("progress", done=done, total=total, description=description, postfix=postfix)


def note(text: str) -> None:
    """Adds ``text`` to the running step's line, such as ``600 images`` or ``best epoch 4``."""
    emit("note", text=text)


def wants_color(stream: IO[str]) -> bool:
    """Whether ANSI codes may be written to ``stream``: a terminal, and ``NO_COLOR`` unset."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return _ANSI.sub("", text)


class RunConsole(io.TextIOBase):
    """Stands in for ``sys.stdout`` and ``sys.stderr`` while a local run goes; see the module docstring.

    Args:
        log: The run's log file: every line but the markers, without ANSI codes.
        out: Where step lines go (the real stdout).
        err: Where the progress bar and, with ``verbosity`` >= 1, everything else goes (the real stderr).
        verbosity: 0 shows step lines and the progress bar; 1 and more also the whole log.
    """

    def __init__(self, log: IO[str], out: TextIO, err: TextIO, verbosity: int) -> None:
        super().__init__()
        self.log, self.out, self.err, self.verbosity = log, out, err, verbosity
        self._partial = ""
        self._bar: Any = None
        self._notes: list[str] = []
        self._started: dict[str, float] = {}

    def writable(self) -> bool:
        """Always: this is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Takes output; each complete line is shown, logged or turned into an event."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        """Flushes the log."""
        self.log.flush()

    def close_bar(self) -> None:
        """Removes the progress bar (at the end of a step, or of the run)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, line: str) -> None:
        content = line.lstrip()  # kfp indents a step's output
        if content.startswith(_MARKER):
            try:
                event = json.loads(content[len(_MARKER) :])
            except ValueError:
                event = None
            if isinstance(event, dict):
                self._event(event)
                return
        plain = strip_ansi(line)
        self.log.write(plain + "\n")
        if self.verbosity >= 1:
            self.close_bar()
            self.err.write((line if wants_color(self.err) else plain) + "\n")

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self._started[str(event.get("step"))] = time.monotonic()
            self._notes = []
        elif kind == "note":
            self._notes.append(str(event.get("text", "")))
        elif kind == "progress":
            self._progress(event)
        elif kind in ("done", "failed"):
            self.close_bar()
            step = str(event.get("step"))
            seconds = time.monotonic() - self._started.pop(step, time.monotonic())
            state = "done" if kind == "done" else "FAILED"
            details = "; ".join(self._notes)
            self.out.write(f"{step:<10}{state:<8}{seconds:6.1f} s  {details}".rstrip() + "\n")
            self.out.flush()
            self.log.write(f"== {step} {state} after {seconds:.1f} s: {details}\n")

    def _progress(self, event: dict[str, Any]) -> None:
        if self.verbosity >= 1 or not self.err.isatty():
            return  # a bar among log lines, or in a file, is noise
        from tqdm import tqdm

        total = int(event.get("total", 0))
        description = str(event.get("description", ""))
        if self._bar is None or self._bar.total != total or self._bar.desc != description:
            self.close_bar()
            self._bar = tqdm(total=total, desc=description, file=self.err, leave=False, dynamic_ncols=True)
        self._bar.update(int(event.get("done", 0)) - self._bar.n)
        postfix = event.get("postfix") or {}
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=True)
