"""`--help` for the `pyvisor` commands: argparse formats it from the options a CommandParser
recorded (command_line.py), so argparse, with gettext and locale, is imported only when
help is asked for.

'Usage:' as the other commands on this system write it, the description refilled
paragraph by paragraph instead of into one, and the terminal's width."""
from __future__ import annotations

import argparse
import shutil

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .command_line import CommandParser


class _HelpFormatter(argparse.HelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None) -> None:
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n\n".join(fill(paragraph, width, indent) for paragraph in text.split("\n\n"))


def format_help(command: CommandParser) -> str:
    width = shutil.get_terminal_size().columns - 2   # as argparse's own
    parser = argparse.ArgumentParser(
        prog=command.prog, usage=command.usage, description=command.description,
        formatter_class=lambda prog: _HelpFormatter(prog, width=width), add_help=False)
    for option in command.options:
        kwargs = dict(option.kwargs)
        if kwargs.get("help") == argparse.SUPPRESS:   # argparse tells it by identity
            kwargs["help"] = argparse.SUPPRESS
        parser.add_argument(*option.names, **kwargs)
    return parser.format_help()
