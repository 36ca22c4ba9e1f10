"""``jaxmm tokenizer train|encode|decode|info``: train, apply or inspect tokenizers."""

from __future__ import annotations

import argparse
import json
import sys

from jaxmm.cli.failures import command
from jaxmm.data.tokenizers import load, train_tokenizer


@command("jaxmm tokenizer")
def main(argv: list[str]) -> int:
    """``jaxmm tokenizer`` entry point."""
    parser = argparse.ArgumentParser(prog="jaxmm tokenizer",
                                     description="Train, apply or inspect tokenizers.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a tokenizer on text files")
    tr.add_argument("--kind", required=True, choices=["wordpiece", "bpe", "sentencepiece"])
    tr.add_argument("--files", required=True, nargs="+", help="plain-text training files")
    tr.add_argument("--vocab-size", required=True, type=int)
    tr.add_argument("--out", required=True, help="output folder")
    tr.add_argument("--min-frequency", type=int, default=2)
    tr.add_argument("--no-lowercase", action="store_true", help="keep case")
    tr.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"],
                    help="sentencepiece model type")
    tr.add_argument("--model-max-length", type=int, default=512)
    en = sub.add_parser("encode", help="print token ids (one JSON object per text)")
    en.add_argument("--tokenizer", required=True, help="tokenizer folder or file")
    en.add_argument("texts", nargs="*", help="texts (default: lines of stdin)")
    en.add_argument("--pair", action="append", help="second segment (once per text)")
    en.add_argument("--max-length", type=int)
    en.add_argument("--no-special-tokens", action="store_true")
    de = sub.add_parser("decode", help="print the text of token ids")
    de.add_argument("--tokenizer", required=True)
    de.add_argument("ids", nargs="+", type=int)
    de.add_argument("--keep-special", action="store_true")
    info = sub.add_parser("info", help="vocabulary size and special tokens")
    info.add_argument("--tokenizer", required=True)
    args = parser.parse_args(argv)
    if args.command == "train":
        tok = train_tokenizer(args.kind, args.files, args.vocab_size, out_dir=args.out,
                              min_frequency=args.min_frequency,
                              lowercase=not args.no_lowercase, model_type=args.model_type,
                              model_max_length=args.model_max_length)
        print(f"Trained {args.kind} tokenizer, vocab_size={tok.vocab_size}, saved to "
              f"{args.out}")
        return 0
    tok = load(args.tokenizer)
    if args.command == "info":
        print(json.dumps({"type": type(tok).__name__, "vocab_size": tok.vocab_size,
                          "model_max_length": tok.model_max_length,
                          **{f"{r}_token": t for r, t in tok.special_tokens.items()}},
                         indent=2))
    elif args.command == "decode":
        print(tok.decode(args.ids, skip_special_tokens=not args.keep_special))
    else:
        texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
        enc = tok.encode(texts, pairs=args.pair, max_length=args.max_length, padding=False,
                         add_special_tokens=not args.no_special_tokens)
        for i, ids in enumerate(enc["input_ids"]):
            row = {"input_ids": ids.tolist(),
                   "tokens": [tok.id_to_token(int(t)) for t in ids]}
            if "token_type_ids" in enc:
                row["token_type_ids"] = enc["token_type_ids"][i].tolist()
            print(json.dumps(row, ensure_ascii=False))
    return 0
