"""Command-line programs: the console scripts bvt-* (setup.py), each `run()` of a module here."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags


def fail(message) -> NoReturn:
    """Reports bad input as one line on stderr and exits with status 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config override reported as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(e)
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config_flags overrides
        bad = [a for a in argv[1:] if a.startswith("--config.")]
        fail(f"bad config override among {bad}: no such field or wrong type: {str(e).strip(chr(39) + chr(34))}")


def run_absl(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
    """app.run(main) with flag errors and app.UsageError reported as one line (exit status 2)."""
    def checked(args):
        try:
            return main(args)
        except app.UsageError as e:
            fail(e)

    app.run(checked, argv=None if argv is None else list(argv), flags_parser=parse_flags)
