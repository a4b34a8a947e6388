"""What every ``python -m nas.<tool>`` shares: bad input ends in one line on stderr, not a traceback,
and a tool's options are read off the settings dataclasses its library takes, so a default and
its help text live in one place (the field), whether a run starts from the command line or a config.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Budget:
...     steps: int = setting(100, "training steps")
>>> parser = argparse.ArgumentParser()
>>> budget = add_options(parser, Budget)
>>> budget.build(parser.parse_args(["--steps", "7"]))
Budget(steps=7)

A flag means one thing in every tool (README, "Command-line conventions"); an old spelling whose
meaning changed stays registered with :func:`retire`, so using it ends in one line naming its successor.
"""

from __future__ import annotations

import argparse
import sys
import types
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

from nas.errors import NasError

EXIT_USAGE = 2


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main``; report :class:`NasError` (and a missing file) as ``error: ...`` and exit 2."""
    try:
        return int(main(argv) or 0)
    except (NasError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class _Retired(argparse.Action):
    """An option that was renamed: seeing it (with or without a value) ends the run in one line."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, successor: str) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.successor = successor

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        raise NasError(f"{self.option_strings[0]} is now {self.successor}")


def retire(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, successor: str) -> None:
    """Refuse ``flag``, whose meaning changed, with ``error: FLAG is now SUCCESSOR`` (hidden from --help)."""
    parser.add_argument(flag, action=_Retired, successor=successor)


def setting(default: Any, help: str, *, metavar: str | None = None, choices: Iterable[str] | None = None) -> Any:
    """A dataclass field that also says how it reads as a command-line option (see :func:`add_options`)."""
    metadata = {"help": help, "metavar": metavar, "choices": tuple(choices) if choices is not None else None}
    return field(default=default, metadata=metadata)


def _value_type(hint: Any) -> Any:
    """``int | None`` -> ``int``: an option left out keeps the field's default, None included."""
    if get_origin(hint) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(hint) if arg is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return hint


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


@dataclass(frozen=True)
class Options:
    """The options :func:`add_options` added for one dataclass; :meth:`build` makes the instance back."""

    cls: type
    dests: Mapping[str, str]  # field name -> argparse dest

    def build(self, args: argparse.Namespace, **given: Any) -> Any:
        """The dataclass from the parsed options; ``given`` sets fields that have no option of their own."""
        values = {name: getattr(args, dest) for name, dest in self.dests.items() if name not in given}
        return self.cls(**values, **given)


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                only: Iterable[str] | None = None, skip: Iterable[str] = (), names: Mapping[str, str] | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Options:
    """Add ``--field-name`` for each field of the dataclass ``cls`` (``only`` those, none of ``skip``).

    Type, default, choices, metavar and help come from the field (:func:`setting`); the help ends
    with the default unless that is None (the help then says what None means). ``names`` renames
    an option where another tool's option already has the field's name; ``overrides`` replaces
    argparse keywords of one option (a device default decided at run time, say).
    """
    hints = get_type_hints(cls)
    names, overrides, skip = dict(names or {}), dict(overrides or {}), set(skip)
    chosen = [f for f in fields(cls) if (only is None or f.name in only) and f.name not in skip]
    dests = {}
    for f in chosen:
        dest = names.get(f.name, f.name)
        default = _default(f)
        help_text = f.metadata.get("help", "")
        if default is not None and default is not False:
            help_text = f"{help_text} (default: {default})".strip()
        kind = _value_type(hints[f.name])
        keywords: dict[str, Any] = {"dest": dest, "default": default, "help": help_text}
        if kind is bool:
            keywords["action"] = "store_true"
        else:
            keywords["type"] = kind
            for key in ("metavar", "choices"):
                if f.metadata.get(key) is not None:
                    keywords[key] = f.metadata[key]
        keywords.update(overrides.get(f.name, {}))
        parser.add_argument("--" + dest.replace("_", "-"), **keywords)
        dests[f.name] = dest
    return Options(cls, dests)
