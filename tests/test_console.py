"""The run's terminal: step lines from the steps' markers, the rest to the log; CLI conventions."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from inspectflow import console
from inspectflow.cli import cli, hoist_verbosity


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def step_output(monkeypatch: pytest.MonkeyPatch) -> str:
    """What a step prints under the local runner (markers among kfp's and the libraries' lines)."""
    monkeypatch.setenv(console.CONSOLE_ENV, "1")
    monkeypatch.setattr(console, "_last_progress", 0.0)  # progress is rate-limited across calls
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    print("    [KFP Executor 2026-12-02 01:38:09,216 INFO]: Got executor_input:")
    console.emit("start", step="train")
    console.progress(1, 4, "train epoch 1/2", loss=0.7)
    print("\x1b[31mUserWarning: colour from a library\x1b[0m")
    console.note("2 epochs of unet")
    console.emit("done", step="train")
    monkeypatch.undo()
    return printed.getvalue()


def test_steps_are_one_line_each_and_the_rest_goes_to_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    output = step_output(monkeypatch)
    log, out, err = io.StringIO(), io.StringIO(), io.StringIO()
    console.RunConsole(log, out, err, verbosity=0).write(
        "    " + output.replace("\n", "\n    ")
    )  # kfp indents
    assert out.getvalue().split()[:2] == ["train", "done"]
    assert out.getvalue().rstrip().endswith("2 epochs of unet")
    assert err.getvalue() == ""  # no bar: not a terminal
    assert "Got executor_input" in log.getvalue() and "UserWarning: colour" in log.getvalue()
    assert "\x1b" not in log.getvalue() + out.getvalue()
    assert "::inspectflow::" not in log.getvalue()


def test_verbose_shows_the_log_without_colour_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    output = step_output(monkeypatch)
    log, out, err = io.StringIO(), io.StringIO(), io.StringIO()
    console.RunConsole(log, out, err, verbosity=1).write(output)
    assert "Got executor_input" in err.getvalue() and "UserWarning: colour" in err.getvalue()
    assert "\x1b" not in err.getvalue()


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert console.wants_color(Tty()) and not console.wants_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not console.wants_color(Tty())


def test_a_terminal_gets_a_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    output = step_output(monkeypatch)
    err = Tty()
    console.RunConsole(io.StringIO(), io.StringIO(), err, verbosity=0).write(output)
    assert "train epoch 1/2" in err.getvalue() and "loss=0.7" in err.getvalue()


def test_markers_only_under_a_local_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(console.CONSOLE_ENV, raising=False)
    console.note("nothing to see")
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(console.CONSOLE_ENV, "1")
    console.note("seen")
    line = capsys.readouterr().out
    assert json.loads(line.split("::inspectflow::", 1)[1]) == {"event": "note", "text": "seen"}


def test_verbosity_flags_work_anywhere_on_the_line() -> None:
    assert hoist_verbosity(["run", "textile", "-v"]) == ["-v", "run", "textile"]
    assert hoist_verbosity(["models", "-vv", "list", "x"]) == ["-vv", "models", "list", "x"]
    assert hoist_verbosity(["run", "--verbose", "x", "--", "-v"]) == ["--verbose", "run", "x", "--", "-v"]


def test_version_and_short_help() -> None:
    runner = CliRunner()
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("inspectflow, version ")
    short = runner.invoke(cli, ["models", "-h"])
    assert short.exit_code == 0 and "Usage:" in short.output


def test_read_commands_create_no_store(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inspectflow", "models", "list", "textile", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        check=False,
    )
    assert result.returncode == 1 and "no MLflow store here" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []
