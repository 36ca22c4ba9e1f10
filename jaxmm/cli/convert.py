"""``jaxmm convert``: Hugging Face folders <-> jaxmm model folders.

Usage::

    jaxmm convert from-hf HF_DIR OUT [--scan-layers] [--set KEY=VALUE ...] [--allow-pickle]
    jaxmm convert to-hf JAXMM_DIR OUT
    jaxmm convert list

``from-hf`` reads a Hugging Face model folder (``config.json`` +
``model.safetensors`` or sharded safetensors) of any registered family
(``jaxmm convert list``) and writes a jaxmm model folder ``OUT``:

* ``OUT/jaxmm_model.json``: ``{"format": "jaxmm-model", "version": 1, "model":
  <registered name>, "config": {<config fields>}, "source": HF_DIR}``
* ``OUT/params.safetensors``: one tensor per parameter, named by its
  ``/``-joined path in the params tree.

Load it back in Python with ``jaxmm.convert.load_converted(OUT)``, which
returns ``(model, params, config)``. ``--set KEY=VALUE`` changes config fields
that do not change the weights (``dtype=bfloat16``, ``remat_policy=full``...);
``--scan-layers`` stores the layers stacked for ``nn.scan``.

``to-hf`` is the inverse: it writes ``config.json`` + ``model.safetensors``
that ``transformers`` loads with ``from_pretrained``.

Both refuse to overwrite a non-empty ``OUT`` unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import ast
import os
from collections.abc import Sequence
from typing import Any

from jaxmm.cli.failures import command
from jaxmm.errors import InputError

__all__ = ["main"]


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE; got {item!r}.")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            low = text.lower()
            out[key] = {"true": True, "false": False, "none": None}.get(low, text)
    return out


def _check_out(out: str, overwrite: bool) -> None:
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"{out!r} exists and is not empty; choose a new folder or pass "
                              "--overwrite.")


def _from_hf(args: argparse.Namespace) -> int:
    from jaxmm.convert import from_hf, save_converted

    _check_out(args.out, args.overwrite)
    options = _parse_set(args.set)
    if args.scan_layers:
        options["scan_layers"] = True
    model, params, _ = from_hf(args.hf_dir, allow_pickle=args.allow_pickle, **options)
    save_converted(model, params, args.out, source=os.path.abspath(args.hf_dir))
    n = sum(int(x.size) for x in __import__("jax").tree.leaves(params))
    print(f"Wrote {type(model).__name__} ({n:,} parameters) to {args.out}")
    return 0


def _to_hf(args: argparse.Namespace) -> int:
    from jaxmm.convert import load_converted, to_hf

    _check_out(args.out, args.overwrite)
    model, params, _ = load_converted(args.jaxmm_dir)
    to_hf(model, params, args.out)
    print(f"Wrote a Hugging Face folder for {type(model).__name__} to {args.out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from jaxmm.convert import supported_model_types

    print("\n".join(supported_model_types()))
    return 0


@command("jaxmm convert")
def main(argv: list[str]) -> int:
    """Entry point of ``jaxmm convert`` (returns the exit status)."""
    parser = argparse.ArgumentParser(
        prog="jaxmm convert", description="Convert between Hugging Face and jaxmm folders.",
        epilog="See the jaxmm.cli.convert module docstring for the on-disk format.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("from-hf", help="Hugging Face folder -> jaxmm model folder")
    p.add_argument("hf_dir")
    p.add_argument("out")
    p.add_argument("--scan-layers", action="store_true", help="stack layers for nn.scan")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config field override (repeatable), e.g. dtype=bfloat16")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a pytorch_model.bin-only folder (only for trusted files)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_from_hf)
    p = sub.add_parser("to-hf", help="jaxmm model folder -> Hugging Face folder")
    p.add_argument("jaxmm_dir")
    p.add_argument("out")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_to_hf)
    p = sub.add_parser("list", help="list the Hugging Face model types that convert")
    p.set_defaults(run=_list)
    args = parser.parse_args(argv)
    return args.run(args)
