"""``jaxmm train --config configs/X.py[:arg] --workdir DIR [--config.a.b=v ...]``.

Re-running the same command on the same workdir resumes from its latest
checkpoint. Exit status: 0 when training finished or stopped cleanly on a
preemption notice (SIGTERM; a checkpoint was saved), 1 when it stopped on
NaN/Inf, 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from jaxmm.config import parse_override_args


def main(argv: Sequence[str] | None = None) -> int:
    overrides, rest = parse_override_args(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        prog="jaxmm train",
        description="Train a model from a run config; re-running on the same workdir resumes.",
        epilog="Override any config key with --config.KEY=VALUE (e.g. --config.num_steps=100, "
               "--config.model.config.num_layers=4). See jaxmm.train.run_config for all keys.",
    )
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--workdir", required=True, help="checkpoints, logs and exports go here")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level")
    args = parser.parse_args(rest)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from jaxmm.train import NonFiniteError, run
    from jaxmm.train.run_config import load_run_config

    config = load_run_config(args.config, overrides)
    try:
        summary = run(config, args.workdir)
    except NonFiniteError as e:
        print(f"jaxmm train: error: {e}", file=sys.stderr)
        return 1
    import jax

    if not summary["preempted"] and jax.process_index() == 0:
        print(f"jaxmm train: done at step {summary['step']}; eval {summary['eval']}")
    return 0
