"""``jaxmm config --config configs/X.py[:arg] [--config.a.b=v ...] [--json]``.

Prints the complete run config that ``jaxmm train`` with the same arguments
would run: the file merged over every default, the overrides applied, the
model's, task's and evaluators' keys filled in (the same loader,
:func:`jaxmm.train.run_config.load_run_config`). ``--json`` prints it as
``jaxmm train`` writes it to ``WORKDIR/config.json``.
"""

from __future__ import annotations

import argparse

from jaxmm.cli.failures import command


@command("jaxmm config")
def main(argv: list[str]) -> int:
    from jaxmm.config import parse_override_args

    overrides, rest = parse_override_args(argv)
    parser = argparse.ArgumentParser(
        prog="jaxmm config",
        description="Print the complete run config (every default filled in) that "
                    "'jaxmm train' would run with these arguments.",
    )
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--json", action="store_true",
                        help="print JSON, as train writes WORKDIR/config.json")
    args = parser.parse_args(rest)
    from jaxmm.train.run_config import load_run_config

    config = load_run_config(args.config, overrides)
    print(config.to_json(indent=2) if args.json else str(config).rstrip("\n"))
    return 0
