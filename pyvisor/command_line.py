"""What the parsers of the `pyvisor` commands share: options declared with argparse's
add_argument keywords and parsed as argparse parses them (the same values, the same error
messages), an error raised as UsageError (one line, status 2, in cli.main) instead of
printed under the usage, and getopt's rule that an option's value is the next word even
when that starts with '-' (`--mem -5M` is a bad size, not a missing value).

The parsing is this small loop rather than argparse itself: argparse, with the gettext and
locale modules it loads and the regular expressions it compiles, was about 3 ms of `pyvisor
run`'s start-up (and gettext stats a dozen message catalogues). argparse formats --help
(command_help.py). Not click: its import was about 15 ms.

What argparse does that the commands use: options with one value (`--mem 1G`, `--mem=1G`,
`-m1G`, `-m=1G`), store_true, append, count (`-vv`), help and version; positionals with
nargs None, "?" or REMAINDER; type, choices, default, dest, required. No abbreviations."""
from __future__ import annotations

import sys

SUPPRESS = "==SUPPRESS=="   # argparse's values of these two
REMAINDER = "..."
_FLAGS = ("store_true", "count", "help", "version")   # options that take no value


class UsageError(Exception):
    """A malformed command line. `prog` is the command whose --help helps ("pyvisor run"),
    or None for cli.main to fill in."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class Option:
    """One add_argument call: its names and keywords (command_help.py gives argparse the
    same), and what parsing needs of them."""

    def __init__(self, names: tuple[str, ...], kwargs: dict[str, object]) -> None:
        self.names, self.kwargs = names, kwargs
        self.positional = not names[0].startswith("-")
        self.action = kwargs.get("action", "store")
        self.nargs = kwargs.get("nargs")
        self.type = kwargs.get("type")
        self.choices = kwargs.get("choices")
        self.default = kwargs.get("default", 0 if self.action == "count" else
                                  False if self.action == "store_true" else None)
        self.required = kwargs.get("required", self.positional and self.nargs is None)
        if "dest" in kwargs:
            self.dest = kwargs["dest"]
        elif self.action in ("help", "version"):
            self.dest = SUPPRESS
        elif self.positional:
            self.dest = names[0]
        else:
            long = next((n for n in names if n.startswith("--")), names[0])
            self.dest = long.lstrip("-").replace("-", "_")
        metavar = kwargs.get("metavar")
        self.title = ("/".join(names) if not self.positional else
                      metavar if metavar not in (None, SUPPRESS) else self.dest)


class CommandParser:
    """The parser of one command: `prog` as "pyvisor run", its docstring as description."""

    def __init__(self, prog: str, description: str | None = None):
        self.prog, self.description = prog, description
        self.usage: str | None = None    # argparse's usage string; None: made from the options
        self.options: list[Option] = []
        self._by_name: dict[str, Option] = {}
        self.add_argument("-h", "--help", action="help", help="Show this message and exit.")

    def add_argument(self, *names: str, **kwargs: object) -> Option:
        """As argparse's add_argument, for the keywords the commands use."""
        option = Option(names, kwargs)
        self.options.append(option)
        if not option.positional:
            self._by_name.update(dict.fromkeys(names, option))
        return option

    def format_help(self) -> str:
        from .command_help import format_help

        return format_help(self)

    def error(self, message: str):
        raise UsageError(message, self.prog)

    def parse(self, argv: list[str]) -> dict[str, object]:
        """The options and arguments by name (their `dest`), as argparse would give them;
        the first error raises UsageError."""
        words = self._values_attached(argv)
        # argparse's view of each word: "O" an option, "A" an argument, "-" the first '--'
        # (every word after it is an argument)
        kinds = ["A" if self._option(word) is None else "O" for word in words]
        if "--" in words:
            dashes = words.index("--")
            kinds[dashes:] = ["-"] + ["A"] * (len(words) - dashes - 1)
        values = {o.dest: o.default for o in self.options if o.dest != SUPPRESS}
        seen: set[Option] = set()
        positionals = [o for o in self.options if o.positional]
        extras: list[str] = []
        i = 0
        while i < len(words):
            if kinds[i] == "O":
                self._take_option(words[i], values, seen, extras)
                i += 1
                continue
            end = kinds.index("O", i) if "O" in kinds[i:] else len(words)
            stop = self._take_positionals(words, kinds, i, end, positionals, values, seen)
            extras += words[stop:end]  # what no positional takes, '--' included
            i = max(stop, end)         # a REMAINDER took every word
        for option in positionals:    # none left to take: the optional ones as argparse
            if option.nargs == REMAINDER:
                values[option.dest] = []
            elif option.nargs == "?":
                seen.add(option)
        missing = [o.title for o in self.options if o.required and o not in seen]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        for option in self.options:   # string defaults are converted, as argparse does
            if option not in seen and isinstance(option.default, str) and option.type:
                values[option.dest] = self._convert(option, option.default)
        return values

    def _values_attached(self, argv: list[str]) -> list[str]:
        """Each option that takes a value written with it (`--mem=-5M`), so that the value
        is never taken for an option; '--' ends the options."""
        words = iter(argv)
        attached = []
        for word in words:
            if word == "--":
                attached += [word, *words]
                break
            option = self._by_name.get(word)
            if option is not None and option.action not in _FLAGS:   # exactly one value
                value = next(words, None)
                if value is not None:
                    word = f"{word}={value}"
            attached.append(word)
        return attached

    def _option(self, word: str) -> tuple[Option | None, str, str | None] | None:
        """(the option or None if unknown, its name, the value written with it) for a word
        argparse takes for an option, else None (an argument)."""
        if not word.startswith("-") or word == "-":
            return None
        if word in self._by_name:
            return self._by_name[word], word, None
        name, equals, value = word.partition("=")
        if equals and name in self._by_name:
            return self._by_name[name], name, value
        if not word.startswith("--") and word[:2] in self._by_name:
            return self._by_name[word[:2]], word[:2], word[2:]
        if _is_negative_number(word) or " " in word:
            return None
        return None, word, None

    def _take_option(self, word: str, values: dict, seen: set[Option],
                     extras: list[str]) -> None:
        option, name, attached = self._option(word)
        if option is None:
            extras.append(word)
            return
        flags = []     # -vV: each letter after a flag is another short option
        while option.action in _FLAGS and attached is not None:
            if name[1] == "-" or not attached or f"-{attached[0]}" not in self._by_name:
                self.error(f"argument {option.title}: ignored explicit argument {attached!r}")
            flags.append(option)
            name = f"-{attached[0]}"
            option, attached = self._by_name[name], attached[1:] or None
        for flag in flags:          # once the whole word is known good, as argparse
            self._flag(flag, values, seen)
        if option.action in _FLAGS:
            self._flag(option, values, seen)
        elif attached is None:
            self.error(f"argument {option.title}: expected one argument")
        else:
            self._take(option, attached, values, seen)

    def _take_positionals(self, words: list[str], kinds: list[str], i: int, end: int,
                          positionals: list[Option], values: dict,
                          seen: set[Option]) -> int:
        """Give the arguments from words[i] on to the positionals in turn, as argparse
        matches them: each takes one argument ("?": one if there is one) and the '--'
        beside it; REMAINDER takes every word left, options too. Returns where they
        stopped."""
        while positionals:
            option = positionals[0]
            if option.nargs == REMAINDER:
                self._take(positionals.pop(0), words[i:], values, seen)
                return len(words)
            j = i
            while j < end and kinds[j] == "-":
                j += 1
            if j < end:
                self._take(option, words[j], values, seen)
                j += 1
            elif option.nargs != "?":
                return i               # nothing here it can take
            else:
                seen.add(option)       # "?" with only the '--': its default
            while j < end and kinds[j] == "-":
                j += 1
            positionals.pop(0)
            i = j
        return i

    def _flag(self, option: Option, values: dict, seen: set[Option]) -> None:
        seen.add(option)
        if option.action == "store_true":
            values[option.dest] = True
        elif option.action == "count":
            values[option.dest] = (values[option.dest] or 0) + 1
        elif option.action == "help":
            sys.stdout.write(self.format_help())
            raise SystemExit(0)
        else:   # version
            print(option.kwargs["version"].replace("%(prog)s", self.prog))
            raise SystemExit(0)

    def _take(self, option: Option, value: str | list[str], values: dict,
              seen: set[Option]) -> None:
        seen.add(option)
        if option.nargs == REMAINDER:
            values[option.dest] = value
            return
        converted = self._convert(option, value)
        if option.choices is not None and converted not in option.choices:
            choices = ", ".join(map(repr, option.choices))
            self.error(f"argument {option.title}: invalid choice: {converted!r} "
                       f"(choose from {choices})")
        if option.action == "append":
            values[option.dest] = [*(values[option.dest] or ()), converted]
        else:
            values[option.dest] = converted

    def _convert(self, option: Option, value: str) -> object:
        if option.type is None:
            return value
        try:
            return option.type(value)
        except (TypeError, ValueError):
            name = getattr(option.type, "__name__", repr(option.type))
            self.error(f"argument {option.title}: invalid {name} value: {value!r}")


def _is_negative_number(word: str) -> bool:
    """'-5' or '-1.5', which argparse takes for a positional (no option looks like one)."""
    number = word[1:]
    whole, dot, fraction = number.partition(".")
    return (whole.isdigit() and not dot) or (bool(dot) and fraction.isdigit()
                                              and (whole == "" or whole.isdigit()))
