"""``jaxmm eval --config configs/X.py[:arg] --workdir DIR [--step N | --params DIR]
[--evaluator NAME ...]``.

Runs the config's evaluators (``config.eval.evaluators``: the task's loss by
default, plus any of retrieval, captioning, VQA, ... the config lists) on the
run's latest checkpoint (or ``--step``), or on an exported params directory;
prints the metrics as JSON and writes ``DIR/eval_<step>.json``. A workdir
without the checkpoint asked for is refused before anything is written there.
"""

from __future__ import annotations

import argparse
import json
import os

from jaxmm import storage
from jaxmm.cli.failures import command
from jaxmm.config import parse_override_args
from jaxmm.errors import CheckpointError


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps saved in ``workdir/checkpoints`` (sorted; read without creating anything)."""
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in storage.listdir(folder)
                  if name.isdigit() and storage.is_dir(os.path.join(folder, name)))


def check_checkpoint(workdir: str, step: int | None) -> None:
    """Raises :class:`CheckpointError` unless ``workdir`` holds checkpoint ``step``
    (``None``: any), so a mistyped or empty workdir is refused untouched."""
    storage.resolve(workdir, "--workdir")  # a URL jaxmm can read (one line if not)
    if not storage.is_dir(workdir):
        what = "is a file, not a folder" if storage.exists(workdir) else "does not exist"
        raise CheckpointError(f"Workdir {workdir!r} {what}.",
                              hint="Pass the --workdir of a training run (or --params DIR).")
    steps = checkpoint_steps(workdir)
    if not steps:
        raise CheckpointError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')!r} to "
                              "evaluate.", hint="Train first (jaxmm train --workdir DIR), or "
                              "pass an exported params directory with --params.")
    if step is not None and step not in steps:
        raise CheckpointError(f"No checkpoint of step {step} in {workdir!r}; it has steps "
                              f"{', '.join(map(str, steps))}.", hint="Pick one of them.")


@command("jaxmm eval")
def main(argv: list[str]) -> int:
    overrides, rest = parse_override_args(argv)
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
    if args.params is None:
        check_checkpoint(args.workdir, args.step)
    elif not storage.is_dir(storage.resolve(args.params, "--params")):
        raise CheckpointError(f"--params {args.params!r} is not a folder.",
                              hint="Pass a params export (a training run's WORKDIR/export).")
    result = evaluate_checkpoint(config, args.workdir, step=args.step, params_dir=args.params,
                                 evaluators=tuple(args.evaluator))
    print(json.dumps(result, indent=2))
    return 0
