"""Runs a notebook's code cells in order, headless, in this process.

    python tests/notebook_runner.py notebooks/01_quickstart_text.ipynb \
        [--export results.json NAME ...]

Why not nbclient: it needs a Jupyter kernel (ipykernel, pyzmq, jupyter_client)
and starts one per notebook, which costs seconds and packages the notebooks
do not use. The notebooks contain plain Python only (no ``!``/``%`` magics;
Colab-only steps are guarded in Python), so executing the cells' source in
one namespace is exactly what a kernel would run.

Cells tagged ``colab-install`` (the ``pip install`` cell at the top of each
notebook) are skipped: the code under test is the jaxmm that the interpreter
running this script imports (tests/test_notebooks.py runs it with a virtualenv
where a wheel of the working tree is installed). ``--export FILE NAME...`` writes the named
notebook variables to FILE as JSON (NumPy arrays as nested lists) so a test
can check what the notebook computed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

SKIP_TAG = "colab-install"


def code_cells(path: str) -> list[tuple[int, str]]:
    """``(cell index, source)`` of the code cells to run (``colab-install`` skipped)."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    out = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or SKIP_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        src = cell["source"]
        out.append((i, "".join(src) if isinstance(src, list) else src))
    return out


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__") and not isinstance(value, str | bytes):
        return np.asarray(value).tolist()
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("notebook")
    p.add_argument("--export", nargs="+", metavar=("FILE", "NAME"),
                   help="write these notebook variables to FILE (JSON)")
    args = p.parse_args(argv)
    namespace = {"__name__": "__main__"}
    for index, source in code_cells(args.notebook):
        start = time.perf_counter()
        print(f"--- cell {index} ---", flush=True)
        try:
            exec(compile(source, f"<{args.notebook} cell {index}>", "exec"), namespace)
        except Exception:
            traceback.print_exc()
            print(f"FAILED: {args.notebook} cell {index}", file=sys.stderr, flush=True)
            return 1
        print(f"--- cell {index}: {time.perf_counter() - start:.1f}s ---", flush=True)
    if "jaxmm" in sys.modules:  # which jaxmm ran (the tests check it is the installed one)
        print(f"--- jaxmm: {sys.modules['jaxmm'].__file__}", flush=True)
    if args.export:
        path, names = args.export[0], args.export[1:]
        missing = [n for n in names if n not in namespace]
        if missing:
            print(f"Notebook defines no variable(s) {missing}.", file=sys.stderr)
            return 1
        with open(path, "w", encoding="utf-8") as f:
            json.dump({n: _jsonable(namespace[n]) for n in names}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
