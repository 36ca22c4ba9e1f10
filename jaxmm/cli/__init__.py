"""The ``jaxmm`` command line: ``jaxmm [--debug] <command> [args]``.

Every command is one module of this package exposing ``main(argv) -> int``
(``jaxmm/cli/train.py`` is ``jaxmm train``, ...). A command's module is
imported only when it runs, so ``jaxmm --help`` stays fast.

Every command fails the same way (:mod:`jaxmm.cli.failures`; each command's
``main`` is wrapped by ``failures.command``): one line on stderr, ``jaxmm
<command>: error: <what is wrong, where, and the fix>``, and the exit status of
the README's table (:mod:`jaxmm.errors`). The traceback is printed too with
``--debug`` (before or after the command) or ``JAXMM_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from jaxmm.cli.failures import (
    DEBUG_ENV,
    DEBUG_FLAG,
    debug_enabled,
    quiet_library_tracebacks,
    report,
    split_debug_flag,
)

# name -> one-line help; the command's code is the module jaxmm.cli.<name>.
COMMANDS: dict[str, str] = {
    "train": "train a model from a config; re-running resumes",
    "eval": "evaluate a checkpoint from a workdir",
    "generate": "generate text from a checkpoint or a HF folder",
    "convert": "import/export Hugging Face checkpoints",
    "tokenizer": "train or inspect a tokenizer",
    "data": "build datasets (built-in, COCO, VQA, audio, text)",
    "demo": "train and evaluate multimodal models on the built-in data",
    "compile": "compile a run's train step for a TPU topology (no TPU needed) and report",
    "config": "print the complete run config that 'jaxmm train' would run",
    "info": "show versions and devices",
    "kb": "build a knowledge-base index of documents and ask it questions",
}


def _parser() -> argparse.ArgumentParser:
    width = max(len(n) for n in COMMANDS)
    listing = "\n".join(f"  {n.ljust(width)}  {t}" for n, t in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="jaxmm",
        description="jaxmm: multimodal Transformers in JAX/Flax.",
        epilog=f"commands:\n{listing}\n\nRun 'jaxmm <command> --help' for a command's options."
               f"\nErrors print one line; {DEBUG_FLAG} (or {DEBUG_ENV}=1) adds the traceback.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="print the traceback of an error (also: JAXMM_DEBUG=1)")
    parser.add_argument("command", choices=list(COMMANDS), metavar="command",
                        help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``jaxmm <command>``; returns its exit status (see :mod:`jaxmm.errors`).

    ``argv=None`` (the ``jaxmm`` process itself): the process's arguments, and
    without ``--debug`` no log record of any library prints a traceback.
    """
    process = argv is None
    argv, flag = split_debug_flag(sys.argv[1:] if argv is None else argv)
    if process and not debug_enabled(flag):
        quiet_library_tracebacks()
    parser = _parser()
    if not argv:
        parser.print_help()
        return 2
    if argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    command = parser.parse_args(argv[:1]).command
    try:  # the command's main reports its own failures (failures.command); this one
        # reports a failure to import it
        module = importlib.import_module(f"jaxmm.cli.{command}")
        return int(module.main(([DEBUG_FLAG] if flag else []) + argv[1:]) or 0)
    except SystemExit:
        raise  # argparse's usage errors (exit 2) and --help (exit 0)
    except BaseException as error:  # noqa: BLE001
        return report(f"jaxmm {command}", error, debug=debug_enabled(flag))
