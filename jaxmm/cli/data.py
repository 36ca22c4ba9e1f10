"""``jaxmm data``: build the built-in dataset and datasets from local files.

Examples::

    jaxmm data build-builtin --data-dir data --size small
    jaxmm data build-coco --root /data/coco --data-dir data --name coco2017 \\
        --split train=annotations/captions_train2017.json:train2017 \\
        --split validation=annotations/captions_val2017.json:val2017
    jaxmm data build-coco-detection --root /data/coco --data-dir data --name coco2017 \\
        --split train=annotations/instances_train2017.json:train2017 \\
        --split validation=annotations/instances_val2017.json:val2017
    jaxmm data build-vqa --root /data/vqa --data-dir data \\
        --split train=q_train.json:a_train.json:train2014
    jaxmm data build-audio --root /data/speech --data-dir data --split train=train.jsonl
    jaxmm data build-text --root /data/text --data-dir data --split train=corpus.txt
    jaxmm data build-chat --root /data/dialogues --data-dir data --name help \
        --split train=train.jsonl --split validation=valid.jsonl --template plain
    jaxmm data build-karpathy --root /data/flickr30k --data-dir data --name flickr30k \
        --split train=dataset_flickr30k.json:flickr30k-images \
        --split validation=dataset_flickr30k.json:flickr30k-images
    jaxmm data build-text-labels --root /data/reviews --data-dir data --name reviews \
        --split train=train.csv --split validation=dev.csv --column text=review
    jaxmm data build-image-labels --root /data/pets --data-dir data --split train=train
    jaxmm data build-image-captions --root /data/flickr --data-dir data \
        --split train=captions.jsonl
    jaxmm data build-audio-labels --root /data/emotions --data-dir data --split train=all.csv
    jaxmm data build-audio-captions --root /data/clotho --data-dir data --name clotho \\
        --split train=development.csv --split validation=evaluation.csv
    jaxmm data build-video-captions --root /data/msrvtt --data-dir data --name msrvtt \\
        --split train=train.csv --fps 4 --frame-size 112
    jaxmm data build-video-labels --root /data/actions --data-dir data --split train=train.csv
    jaxmm data build-conll --root /data/ner --data-dir data --split train=train.txt \
        --split validation=valid.txt [--classes O,B-PER,I-PER,...]
    jaxmm data info --data-dir data --name jaxmm_scenes/small
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from jaxmm.cli.failures import command
from jaxmm.errors import DataError, InputError

__all__ = ["main"]

# split spec fields per format, in the order they appear after "NAME=".
_FIELDS = {
    "coco": ("annotations", "images"),
    "coco-detection": ("annotations", "images"),
    "vqa": ("questions", "annotations", "images"),
    "audio": ("manifest",),
    "text": ("input",),
    "chat": ("input",),
    "karpathy": ("annotations", "images"),
    "text-labels": ("input",),
    "image-labels": ("input",),
    "image-captions": ("input",),
    "audio-labels": ("input",),
    "conll": ("input",),
    "video-labels": ("input",),
    "video-captions": ("input",),
    "audio-captions": ("input",),
}
_TABLES = ("text-labels", "image-labels", "image-captions", "audio-labels", "video-labels",
           "video-captions", "audio-captions")


def _parse_splits(fmt: str, items: Sequence[str]) -> dict[str, dict[str, str]]:
    fields = _FIELDS[fmt]
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name:
            shape = ":".join(f.upper() for f in fields)
            raise InputError(f"--split {item!r}: expected NAME={shape}")
        parts = rest.split(":")
        if len(parts) > len(fields):
            raise InputError(f"--split {item!r}: at most {len(fields)} ':'-separated parts "
                             f"({', '.join(fields)}).")
        out[name] = {f: p for f, p in zip(fields, parts) if p}
    return out


def _build_builtin(args) -> int:
    from jaxmm.data import builtin

    overrides = {k: v for k, v in {
        "train_size": args.train_size, "validation_size": args.validation_size,
        "test_size": args.test_size, "image_size": args.image_size, "seed": args.seed,
        "max_objects": args.max_objects,
    }.items() if v is not None}
    if args.no_audio:
        overrides["with_audio"] = False
    builder = builtin.build(args.data_dir, args.size, args.name, **overrides)
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    print(json.dumps({"name": f"{builtin.NAME}/{builder.builder_config.name}",
                      "path": str(builder.data_dir), "splits": splits,
                      "text_corpus": builtin.corpus_path(builder)}))
    return 0


def _columns(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        role, sep, column = item.partition("=")
        if not sep or not role or not column:
            raise InputError(f"--column {item!r}: expected ROLE=COLUMN, e.g. text=review.")
        out[role] = column
    return out


def _build_local(fmt: str, args) -> int:
    from jaxmm.data.local import build_local

    table = {}
    classes = [c for c in (getattr(args, "classes", None) or "").split(",") if c.strip()]
    if fmt in _TABLES:
        table = {"columns": _columns(args.column), "classes": classes or None}
        if fmt.startswith("video-"):
            table["video"] = {"fps": args.fps, "size": args.frame_size,
                              "max_frames": args.max_frames}
    elif fmt == "conll":
        table = {"classes": classes or None}
    elif fmt == "chat":
        table = {"template": args.template}
    summary = build_local(fmt, args.root, _parse_splits(fmt, args.split), args.data_dir,
                          name=args.name, on_corrupt=args.on_corrupt, text_field=args.text_field,
                          **table)
    print(json.dumps(summary))
    return 0


def _info(args) -> int:
    from jaxmm.data.sources import find_prepared

    folder = find_prepared(args.data_dir, args.name)
    if folder is None:
        raise DataError(f"No prepared dataset {args.name!r} in {args.data_dir!r}.",
                        hint="Build it with 'jaxmm data build-...' (see jaxmm data --help).")
    with open(f"{folder}/dataset_info.json") as f:
        info = json.load(f)
    splits = {s["name"]: sum(int(x) for x in s.get("shardLengths", [])) for s in info["splits"]}
    out = {"name": args.name, "path": folder, "splits": splits,
           "examples": sum(splits.values()), "file_format": info.get("fileFormat"),
           "disk_bytes": sum(os.path.getsize(os.path.join(folder, n))
                             for n in os.listdir(folder))}
    out["disk"] = f"{out['disk_bytes'] / 2**20:.1f} MiB"
    if os.path.exists(f"{folder}/metadata.json"):  # build time, speech source, skipped files
        with open(f"{folder}/metadata.json") as f:
            out["metadata"] = json.load(f)
    print(json.dumps(out))
    return 0


@command("jaxmm data")
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jaxmm data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-builtin", help="generate the built-in scenes dataset")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--size", default="small", help="tiny | small | base")
    p.add_argument("--name", default=None, help="config name (default: derived from options)")
    for opt in ("train-size", "validation-size", "test-size", "image-size", "seed",
                "max-objects"):
        p.add_argument(f"--{opt}", type=int, default=None)
    p.add_argument("--no-audio", action="store_true", help="skip the spoken captions")

    for fmt, fields in _FIELDS.items():
        p = sub.add_parser(f"build-{fmt}", help=f"build a dataset from local {fmt} files")
        p.add_argument("--root", required=True, help="dataset folder; all paths stay inside it")
        p.add_argument("--data-dir", required=True)
        p.add_argument("--name", default="default")
        p.add_argument("--split", action="append", default=[],
                       help=f"NAME={':'.join(f.upper() for f in fields)} (relative to --root); "
                       "repeat per split")
        p.add_argument("--on-corrupt", choices=("skip", "fail"), default="skip")
        p.add_argument("--text-field", default="text", help="JSON-lines text field (text)")
        if fmt in _TABLES:
            p.add_argument("--column", action="append", default=[],
                           help="ROLE=COLUMN: the table column (CSV header or JSON key) of a "
                           "role (text, text_pair, label, image, caption, audio, video); repeat")
            if not fmt.endswith("-captions"):
                p.add_argument("--classes", default=None,
                               help="comma-separated label names in class-id order (default: "
                               "every label found, sorted); rows with others are skipped")
        if fmt.startswith("video-"):
            p.add_argument("--fps", type=float, default=8.0,
                           help="frames kept per second of video (default 8)")
            p.add_argument("--frame-size", type=int, default=64,
                           help="stored frames are resized to this square (default 64)")
            p.add_argument("--max-frames", type=int, default=64,
                           help="at most this many frames per video (default 64)")
        if fmt == "chat":
            p.add_argument("--template", default=None,
                           help="a chat template (plain, llama3, chatml): conversations with "
                           "roles it does not format are skipped and counted")
        if fmt == "conll":
            p.add_argument("--classes", default=None,
                           help="comma-separated tags in class-id order (default: the CoNLL-2003 "
                           "NER tags O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC,B-MISC,I-MISC); a tag "
                           "outside them fails the build, naming file and line")

    p = sub.add_parser("info", help="show a prepared dataset's splits")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--name", required=True, help="e.g. jaxmm_scenes/small")

    args = parser.parse_args(argv)
    if args.command == "build-builtin":
        return _build_builtin(args)
    if args.command == "info":
        return _info(args)
    return _build_local(args.command.removeprefix("build-"), args)

