"""``jaxmm train --config configs/X.py[:arg] --workdir DIR [--config.a.b=v ...]``.

Re-running the same command on the same workdir resumes from its latest
checkpoint. Exit status (the README's table): 0 when training finished or
stopped cleanly on a preemption notice (SIGTERM; a checkpoint was saved), 1
when it stopped on NaN/Inf, 2 on bad input (config, data, tokenizer, files),
3 when the workdir's checkpoints cannot be used, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging

from jaxmm import storage
from jaxmm.cli.failures import command
from jaxmm.config import parse_override_args
from jaxmm.errors import InputError


def check_workdir(workdir: str, option: str = "--workdir") -> None:
    """``workdir`` must be a folder (or a ``gs://`` URL) or not exist yet (raises
    :class:`InputError`)."""
    path = storage.resolve(workdir, option)
    if storage.exists(path) and not storage.is_dir(path):
        raise InputError(f"{option} {workdir!r} is a file, not a folder.",
                         hint=f"Pass a folder for {option} (a new one is created).")


@command("jaxmm train")
def main(argv: list[str]) -> int:
    overrides, rest = parse_override_args(argv)
    parser = argparse.ArgumentParser(
        prog="jaxmm train",
        description="Train a model from a run config; re-running on the same workdir resumes.",
        epilog="Override any config key with --config.KEY=VALUE (e.g. --config.num_steps=100, "
               "--config.model.config.num_layers=4, --config.eval.num_batches=None). "
               "'jaxmm config' prints every key. See jaxmm.train.run_config for all keys.",
    )
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, logs and exports go here (a folder or gs://BUCKET/DIR)")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level")
    args = parser.parse_args(rest)
    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        parser.error(f"--log-level {args.log_level!r} is not one of DEBUG, INFO, WARNING, "
                     "ERROR, CRITICAL")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_workdir(args.workdir)

    from jaxmm.train import run
    from jaxmm.train.run_config import load_run_config

    config = load_run_config(args.config, overrides)
    summary = run(config, args.workdir)
    import jax

    if not summary["preempted"] and jax.process_index() == 0:
        print(f"jaxmm train: done at step {summary['step']}; eval {summary['eval']}")
    return 0
