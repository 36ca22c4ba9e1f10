"""``jaxmm demo --workdir DIR``: train and evaluate multimodal models on the built-in data.

See :mod:`jaxmm.demo` for what it builds, trains, evaluates and draws.
"""

from __future__ import annotations

import argparse

from jaxmm.cli.failures import command


@command("jaxmm demo")
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="jaxmm demo",
        description="Build the built-in dataset, train CLIP, a captioner and a VQA model "
                    "(and, with --runs all, a DETR detector), evaluate them against "
                    "baselines and draw samples.",
    )
    parser.add_argument("--workdir", required=True, help="output folder (created)")
    parser.add_argument("--size", default="small", choices=("tiny", "small", "base"),
                        help="built-in dataset size preset (default: small)")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every run's training steps (default: 1.0)")
    parser.add_argument("--samples", type=int, default=8, help="images in samples.png")
    parser.add_argument("--decodings", default="",
                        help="comma-separated captioner decodings to score (default: all of "
                             "configs/demo.py's DECODINGS: greedy, beam, "
                             "beam_repetition_penalty, beam_no_repeat_3gram)")
    parser.add_argument("--runs", default="",
                        help="comma-separated runs to train and score: clip, captioner, vqa, "
                             "detection; or all (default: clip,captioner,vqa, about 15 "
                             "minutes on two CPU cores; detection adds about 5)")
    args = parser.parse_args(argv)
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be > 0")
    from jaxmm.demo import resolve_runs, run_demo

    try:
        runs = resolve_runs(args.runs or None)
    except ValueError as e:
        parser.error(str(e))
    decodings = tuple(d.strip() for d in args.decodings.split(",") if d.strip()) or None
    run_demo(args.workdir, size=args.size, steps_scale=args.steps_scale, samples=args.samples,
             decodings=decodings, runs=runs)
    return 0
