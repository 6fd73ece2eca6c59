"""Command-line conventions shared by every command."""

import logging

from typer.testing import CliRunner

from zoobot.cli import app
from zoobot.cli.app import global_options_first, log_handler


def test_global_options_after_the_command_are_moved_into_a_hint():
    assert global_options_first(["run", "exp", "--threads", "1", "--iterations", "2"]) == [
        "--threads", "1", "run", "exp", "--iterations", "2"]
    assert global_options_first(["--threads", "2", "run", "exp", "-v"]) == ["--threads", "2", "-v", "run", "exp"]
    assert global_options_first(["--threads", "2", "run", "exp"]) is None
    assert global_options_first(["report", "exp", "--threads=3"]) == ["--threads=3", "report", "exp"]


def test_switches_show_no_value_placeholder():
    result = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    line = next(text for text in result.output.splitlines() if "--override" in text)
    assert "<bool>" not in line
    assert "<int>" in next(text for text in result.output.splitlines() if "--n-samples" in text)


def test_log_lines_are_not_wrapped_outside_a_terminal():
    handler = log_handler()  # pytest captures stdout: not a terminal
    record = logging.LogRecord("zoobot", logging.INFO, __file__, 1, "x" * 300 + " /a/long/path", None, None)
    assert handler.format(record) == "INFO     " + "x" * 300 + " /a/long/path"
