"""The ``jaxmm`` command line: ``jaxmm <command> [args]``.

Every command is one module of this package exposing ``main(argv) -> int``
(``jaxmm/cli/train.py`` is ``jaxmm train``, ...). A command's module is
imported only when it runs, so ``jaxmm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> one-line help; the command's code is the module jaxmm.cli.<name>.
COMMANDS: dict[str, str] = {
    "train": "train a model from a config; re-running resumes",
    "eval": "evaluate a checkpoint from a workdir",
    "generate": "generate text from a checkpoint or a HF folder",
    "convert": "import/export Hugging Face checkpoints",
    "tokenizer": "train or inspect a tokenizer",
    "data": "build datasets (built-in, COCO, VQA, audio, text)",
    "demo": "train and evaluate multimodal models on the built-in data",
    "config": "print a run config with overrides applied",
    "info": "show versions and devices",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = COMMANDS
    width = max(len(n) for n in commands)
    listing = "\n".join(f"  {n.ljust(width)}  {t}" for n, t in commands.items())
    parser = argparse.ArgumentParser(
        prog="jaxmm",
        description="jaxmm: multimodal Transformers in JAX/Flax.",
        epilog=f"commands:\n{listing}\n\nRun 'jaxmm <command> --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(commands), metavar="command",
                        help="one of: " + ", ".join(commands))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv:
        parser.print_help()
        return 2
    if argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    ns = parser.parse_args(argv[:1])
    rest = argv[1:]
    from jaxmm.config import ConfigError

    try:
        module = importlib.import_module(f"jaxmm.cli.{ns.command}")
        return int(module.main(rest) or 0)
    except ConfigError as e:
        print(f"jaxmm {ns.command}: error: {e}", file=sys.stderr)
        return 2

