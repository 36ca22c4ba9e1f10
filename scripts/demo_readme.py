"""Regenerates the README's demo results from a ``make demo`` run, never by hand.

    python scripts/demo_readme.py runs/demo/results.json   # copy + rewrite the README block
    python scripts/demo_readme.py --check                   # README matches docs/demo_results.json

The run's ``results.json`` is copied to ``docs/demo_results.json`` (so the block can be
re-rendered and checked later) and the README's block between the ``demo-results`` markers
is replaced by :func:`jaxmm.demo.readme_section` of it: the timing line and the
``results.md`` tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxmm.demo import README_END, README_START, readme_section  # noqa: E402

STORED = os.path.join(ROOT, "docs", "demo_results.json")
README = os.path.join(ROOT, "README.md")


def _block_span(text: str, path: str) -> tuple[int, int]:
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no demo-results block: add the two marker lines "
                         f"{README_START!r} and {README_END!r} where the results go.")
    return start, end + len(README_END)


def render(readme_text: str, results: dict, path: str = README) -> str:
    """``readme_text`` with its demo-results block replaced by ``results``' rendering."""
    start, end = _block_span(readme_text, path)
    return readme_text[:start] + readme_section(results) + readme_text[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", help="a make demo run's results.json")
    p.add_argument("--readme", default=README)
    p.add_argument("--check", action="store_true",
                   help="fail if the README block differs from docs/demo_results.json's")
    a = p.parse_args(argv)
    if a.check == bool(a.results):
        p.error("give a results.json to install, or --check")
    if a.results:
        with open(a.results) as f:
            results = json.load(f)
        os.makedirs(os.path.dirname(STORED), exist_ok=True)
        shutil.copyfile(a.results, STORED)
    else:
        with open(STORED) as f:
            results = json.load(f)
    with open(a.readme) as f:
        text = f.read()
    new = render(text, results, a.readme)
    if a.check:
        if new != text:
            print(f"{a.readme}'s demo results differ from {STORED}; run "
                  "`python scripts/demo_readme.py runs/demo/results.json`.", file=sys.stderr)
            return 1
        return 0
    with open(a.readme, "w") as f:
        f.write(new)
    print(f"updated {a.readme} from {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
