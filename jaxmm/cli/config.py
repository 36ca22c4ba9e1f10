"""``jaxmm config --config configs/X.py[:arg] [--config.a.b=v ...]``: print a run config."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from jaxmm.config import load_config, parse_override_args

    overrides, rest = parse_override_args(list(argv or ()))
    parser = argparse.ArgumentParser(
        prog="jaxmm config",
        description="Print a run config (configs/X.py[:arg]) after --config.a.b=v overrides.",
    )
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    args = parser.parse_args(rest)
    print(load_config(args.config, overrides))
    return 0
