"""``jaxmm eval --config configs/X.py[:arg] --workdir DIR [--step N | --params DIR]``.

Evaluates the run's latest checkpoint (or ``--step``), or an exported params
directory, on the config's eval data; prints the metrics as JSON and writes
``DIR/eval_<step>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from jaxmm.config import parse_override_args


def main(argv: Sequence[str] | None = None) -> int:
    overrides, rest = parse_override_args(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        prog="jaxmm eval", description="Evaluate a checkpoint or an exported params dir.")
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--workdir", required=True, help="the run's workdir")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument("--params", default=None, help="an exported params directory instead")
    args = parser.parse_args(rest)

    from jaxmm.train.loop import evaluate_checkpoint
    from jaxmm.train.run_config import load_run_config

    config = load_run_config(args.config, overrides)
    result = evaluate_checkpoint(config, args.workdir, step=args.step, params_dir=args.params)
    print(json.dumps(result, indent=2))
    return 0
