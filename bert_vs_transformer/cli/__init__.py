"""Command-line programs: the console scripts bvt-* (setup.py), each `run()` of a module here."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, NoReturn, Sequence

from absl import app, flags, logging

from bert_vs_transformer import config_args
from bert_vs_transformer.data import sources

# Bad input every command reports as one line (exit 2); --verbose adds the traceback.
INPUT_ERRORS = (app.UsageError, config_args.FlagError, sources.DataError)


def verbose(argv: Sequence[str] | None = None) -> bool:
    """--verbose (in `argv` when given, else the parsed flag) or absl's debug verbosity (-v 1)."""
    if argv is not None:
        return any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv)
    on = "verbose" in flags.FLAGS and bool(flags.FLAGS["verbose"].value)
    return on or logging.get_verbosity() >= logging.DEBUG


def report(message, error: BaseException | None = None, show_traceback: bool | None = None) -> int:
    """Prints `message` as one line `error: ...` on stderr, after the traceback of `error` (or of `message`, an
    exception) with --verbose (or `show_traceback`); -> 2, the exit status."""
    error = error or (message if isinstance(message, BaseException) else None)
    if error is not None and (verbose() if show_traceback is None else show_traceback):
        traceback.print_exception(error)
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    return 2


def fail(message, error: BaseException | None = None) -> NoReturn:
    """Reports bad input as one line on stderr and exits with status 2."""
    sys.exit(report(message, error))


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, config file, variant or override reported as one line."""
    try:
        return config_args.parse_flags(argv)
    except config_args.FlagError as e:  # the flags are not parsed yet: --verbose is read from argv
        if verbose(argv):
            traceback.print_exception(e)
        fail(str(e))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with --verbose, and a usage mistake reported as one line (exit 2)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--verbose", action="store_true", help="show an error's traceback too")

    def error(self, message) -> NoReturn:
        fail(f"{message} (--help lists the arguments)")


def run_absl(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
    """app.run(main) with --verbose, and flag errors and INPUT_ERRORS reported as one line (exit status 2)."""
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "Show the traceback of a bad-input error too.")

    def checked(args):
        try:
            return main(args)
        except INPUT_ERRORS as e:
            fail(e)

    app.run(checked, argv=None if argv is None else list(argv), flags_parser=parse_flags)
