"""What the parsers of the `pyvisor` commands share: argparse, with an error raised as
UsageError (one line, status 2, in cli.main) instead of printed under the usage, help that
keeps the description's paragraphs, and getopt's rule that an option's value is the next
word even when that starts with '-' (`--mem -5M` is a bad size, not a missing value).

argparse rather than click: click's import is about 15 ms of `pyvisor run`'s start-up."""
from __future__ import annotations

import argparse


class UsageError(Exception):
    """A malformed command line. `prog` is the command whose --help helps ("pyvisor run"),
    or None for cli.main to fill in."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class _HelpFormatter(argparse.HelpFormatter):
    """'Usage:' as the other commands on this system write it, and the description
    refilled paragraph by paragraph instead of into one."""

    def add_usage(self, usage, actions, groups, prefix=None) -> None:
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n\n".join(fill(paragraph, width, indent) for paragraph in text.split("\n\n"))


class CommandParser(argparse.ArgumentParser):
    """The parser of one command: `prog` as "pyvisor run", its docstring as description."""

    def __init__(self, prog: str, description: str | None = None):
        super().__init__(prog=prog, description=description, formatter_class=_HelpFormatter,
                         allow_abbrev=False, add_help=False)
        self.add_argument("-h", "--help", action="help", help="Show this message and exit.")

    _width = 78   # of help text; format_help asks the terminal

    def _get_formatter(self) -> argparse.HelpFormatter:
        """add_argument makes a formatter for each option only to check its metavar: the
        terminal's width (shutil, about 3 ms of imports) is asked for by format_help only."""
        return self.formatter_class(prog=self.prog, width=self._width)

    def format_help(self) -> str:
        import shutil

        self._width = shutil.get_terminal_size().columns - 2   # as argparse's own
        return super().format_help()

    def error(self, message: str):
        raise UsageError(message, self.prog)

    def parse(self, argv: list[str]) -> dict[str, object]:
        """The options and arguments by name (their `dest`)."""
        return vars(self.parse_args(self._values_attached(argv)))

    def _values_attached(self, argv: list[str]) -> list[str]:
        """Each option that takes a value written with it (`--mem=-5M`), so that argparse
        cannot take a value that starts with '-' for an option; '--' ends the options."""
        words = iter(argv)
        attached = []
        for word in words:
            if word == "--":
                attached += [word, *words]
                break
            action = self._option_string_actions.get(word)
            if action is not None and action.nargs is None:   # exactly one value
                value = next(words, None)
                if value is not None:
                    word = f"{word}={value}"
            attached.append(word)
        return attached
