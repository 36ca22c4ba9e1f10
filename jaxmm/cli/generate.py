"""``jaxmm generate MODEL --prompt TEXT [...]``: text generation from the command line.

``MODEL`` is a Hugging Face folder (``config.json`` + safetensors, imported
with :func:`jaxmm.convert.from_hf`), a jaxmm model folder (``jaxmm_model.json``
+ ``params.safetensors``, from ``jaxmm convert from-hf``), a jaxmm params
export (``model.json`` + ``variables/``), a training workdir holding one in
``export/``, or a Hugging Face Hub id (``org/name[@revision]``) read from the
local Hub cache, or fetched with ``--download``. The
tokenizer comes from the same folder (or ``--tokenizer``). Decoder-only
models continue each prompt; encoder-decoders (T5) take it as the encoder
input. The decoded text of every returned sequence is printed, one per line.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from jaxmm.cli.failures import command
from jaxmm.errors import InputError

__all__ = ["main"]


def _early_stopping(text: str) -> bool | str:
    value = text.lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    if value == "never":
        return "never"
    raise argparse.ArgumentTypeError(f"expected true, false or never; got {text!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmm generate", description=__doc__.split("\n")[0])
    p.add_argument("model", help="HF folder, jaxmm model folder or params export, training "
                   "workdir, or a Hugging Face Hub id (org/name[@revision])")
    p.add_argument("--download", action="store_true",
                   help="fetch a Hub id that is not in the local Hugging Face cache "
                   "(configs, safetensors and tokenizer files only)")
    p.add_argument("--prompt", action="append", default=[],
                   help="a prompt (repeat for a batch)")
    p.add_argument("--prompt-file", help="text file with one prompt per line")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50, help="0 disables it")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--early-stopping", type=_early_stopping, default=False,
                   help="true, false or never (beam search)")
    p.add_argument("--num-return-sequences", type=int, default=1)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--no-repeat-ngram-size", type=int, default=0)
    p.add_argument("--eos-token-id", type=int, action="append",
                   help="EOS id (repeatable); default: the model config's")
    p.add_argument("--keep-special-tokens", action="store_true",
                   help="do not strip special tokens when decoding")
    p.add_argument("--show-prompt", action="store_true",
                   help="decoder-only: print the prompt too, not just the continuation")
    p.add_argument("--int8", action="store_true",
                   help="int8 weight-only quantisation of the kernels and embeddings "
                   "(jaxmm.quantize): ~4x smaller weights, slightly different logits")
    return p


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts += [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise InputError("Give at least one --prompt (or --prompt-file).")
    return prompts


def _generation_config(args, pad_token_id: int | None):
    """The :class:`~jaxmm.generation.GenerationConfig` of the command line."""
    from jaxmm.generation import GenerationConfig

    return GenerationConfig(
        max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
        do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, num_beams=args.num_beams, length_penalty=args.length_penalty,
        early_stopping=args.early_stopping, num_return_sequences=args.num_return_sequences,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        eos_token_id=tuple(args.eos_token_id) if args.eos_token_id else None,
        pad_token_id=pad_token_id,
    )


def _resolve_folders(args) -> None:
    """The model folder (a Hub id becomes its cached snapshot), then the tokenizer folder,
    must exist (InputError otherwise)."""
    if not os.path.isdir(args.model):
        from jaxmm.convert.hub import hub_snapshot, looks_like_hub_id

        if os.path.exists(args.model) or not looks_like_hub_id(args.model):
            raise InputError(f"Model folder {args.model!r} does not exist.",
                             hint="Pass a Hugging Face folder, a jaxmm model folder (jaxmm "
                             "convert from-hf), a params export, a training workdir or a Hub "
                             "id (org/name).")
        args.model = hub_snapshot(args.model, download=args.download)
    if args.tokenizer and not os.path.exists(args.tokenizer):
        raise InputError(f"Tokenizer {args.tokenizer!r} (--tokenizer) does not exist.",
                         hint="Pass a tokenizer folder or file, or leave --tokenizer out to use "
                         "the model folder's.")


@command("jaxmm generate")
def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    prompts = _prompts(args)
    _resolve_folders(args)
    # the tokenizer first: it is quick, and a folder without one fails before the weights load
    from jaxmm.convert.folders import load_model
    from jaxmm.data.tokenizers import load as load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    model, params = load_model(args.model)
    if args.int8:
        from jaxmm.quantize import quantize_params

        params = quantize_params(params)

    from jaxmm.generation import generate, is_encoder_decoder

    encdec = is_encoder_decoder(model)
    batch = tokenizer.encode(prompts, padding=True, truncation=False)
    ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    config = _generation_config(args, tokenizer.pad_token_id if pad is None else pad)
    out = generate(model, params, ids, mask, generation_config=config,
                   rng=args.seed if args.do_sample else None)
    seq = np.asarray(out.sequences)
    start = 0 if (encdec or args.show_prompt) else ids.shape[1]
    skip = not args.keep_special_tokens
    for row in seq:
        text = tokenizer.decode(row[start:].tolist(), skip_special_tokens=skip)
        print(text.replace("\n", "\\n"))
    return 0

