"""``jaxmm eval --config configs/X.py[:arg] --workdir DIR [--step N | --params DIR]
[--evaluator NAME ...]``.

Runs the config's evaluators (``config.eval.evaluators``: the task's loss by
default, plus any of retrieval, captioning, VQA, ... the config lists) on the
run's latest checkpoint (or ``--step``), or on an exported params directory;
prints the metrics as JSON and writes ``DIR/eval_<step>.json``.
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
        prog="jaxmm eval", description="Evaluate a checkpoint or an exported params dir.",
        epilog="Evaluators and their options come from config.eval.evaluators; override "
               "them with --config.eval.evaluators.NAME.KEY=VALUE.")
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--workdir", required=True, help="the run's workdir")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument("--params", default=None, help="an exported params directory instead")
    parser.add_argument("--evaluator", action="append", default=[],
                        help="run only this evaluator of config.eval.evaluators (repeatable)")
    args = parser.parse_args(rest)

    from jaxmm.train import evaluate_checkpoint, load_run_config

    config = load_run_config(args.config, overrides)
    result = evaluate_checkpoint(config, args.workdir, step=args.step, params_dir=args.params,
                                 evaluators=tuple(args.evaluator))
    print(json.dumps(result, indent=2))
    return 0
