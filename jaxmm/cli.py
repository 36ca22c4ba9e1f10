"""The ``jaxmm`` command line: ``jaxmm <command> [args]``.

Each command lives in its own module exposing ``main(argv) -> int`` and is
imported only when it runs, so ``jaxmm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# name -> (module with main(argv), one-line help). Commands whose module is not
# present are not listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("jaxmm.train.cli", "train a model from a config; re-running resumes"),
    "eval": ("jaxmm.train.cli_eval", "evaluate a checkpoint from a workdir"),
    "generate": ("jaxmm.decoding_cli", "generate text from a checkpoint or a HF folder"),
    "convert": ("jaxmm.convert.cli", "import/export Hugging Face checkpoints"),
    "tokenizer": ("jaxmm.data.tokenizers", "train or inspect a tokenizer"),
    "data": ("jaxmm.data.cli", "build datasets (built-in, COCO, VQA, audio, text)"),
    "demo": ("jaxmm.demo", "train and evaluate multimodal models on the built-in data"),
    "config": ("jaxmm.cli", "print a run config with overrides applied"),
    "info": ("jaxmm.cli", "show versions and devices"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, text) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = (module, text)
    return out


def _info(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(prog="jaxmm info", description="Versions and devices.").parse_args(
        argv
    )
    import flax
    import jax
    import optax

    import jaxmm

    print(f"jaxmm {jaxmm.__version__}")
    print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}")
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s): {jax.devices()}")
    print(f"processes: {jax.process_count()} (this is {jax.process_index()})")
    return 0


def _config(argv: Sequence[str]) -> int:
    from jaxmm.config import load_config, parse_override_args

    overrides, rest = parse_override_args(argv)
    parser = argparse.ArgumentParser(
        prog="jaxmm config",
        description="Print a run config (configs/X.py[:arg]) after --config.a.b=v overrides.",
    )
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    args = parser.parse_args(rest)
    print(load_config(args.config, overrides))
    return 0


_BUILTIN = {"info": _info, "config": _config}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    width = max(len(n) for n in commands)
    listing = "\n".join(f"  {n.ljust(width)}  {t}" for n, (_, t) in commands.items())
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
        if ns.command in _BUILTIN:
            return _BUILTIN[ns.command](rest)
        module = importlib.import_module(commands[ns.command][0])
        return int(module.main(rest) or 0)
    except ConfigError as e:
        print(f"jaxmm {ns.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
