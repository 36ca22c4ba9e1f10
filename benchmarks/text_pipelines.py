"""Text input pipelines vs their training steps' consumption, on CPU.

For each text task, builds a dataset from a real corpus (WordNet glosses,
``jaxmm.data.corpora``) the way a user would (a local builder, or rows stored with the
features of the catalog dataset), trains a WordPiece tokenizer on the glosses, and
measures examples/s of ``jaxmm.data.make_iterator`` with the preset's training
preprocessing, next to examples/s of the shipped config's jitted training step on a
real batch from that pipeline (the config's ``tiny`` model: the fastest, most demanding
consumer):

* ``lm``: ``text/NAME`` (build-text), ``configs/lm_gpt.py``;
* ``text_classification``: ``text_labels/NAME`` (build-text-labels),
  ``configs/glue_bert.py``;
* ``ner``: ``conll/NAME`` (build-conll, words tokenised with word ids),
  ``configs/ner_bert.py``;
* ``extractive_qa``: ``squad`` (rows in tfds ``squad``'s features,
  ``corpora.wordnet_squad``: a question about one noun's entry among 24 other
  definitions, ~150 words (~230 tokens) a context, so at ``--seq-len`` 128 every
  example spans several doc-stride windows), ``configs/qa_bert.py`` (every window of
  every example is a training row; rates count rows);
* ``pretraining``: ``text/NAME`` of 6-definition documents (build-text, JSON lines),
  BERT sentence pairs built in the pipeline (``data.nsp``), ``configs/mlm_bert.py:nsp=true``;
* ``sft_packed``: ``chat/NAME`` (build-chat; two exchanges asking for definitions),
  rendered with the plain template, whole conversations packed per row,
  ``configs/sft_gpt.py:pack=true`` (rates count rows);
* ``text2text``: ``cnn_dailymail`` (rows in its features: ``article`` = 8 consecutive
  glosses, ``highlights`` = the first three's definitions; source ``--seq-len``, target
  ``--seq-len // 4`` tokens), ``configs/t5_text2text.py`` (T5 tiny; the WordPiece
  tokenizer, ``[SEP]`` as end of sequence).

  python benchmarks/text_pipelines.py [--seq-len 128] [--batch 32] [--repeats 3]
      [--glosses 20000] [--json out.json]

The pipeline needs at least 5x headroom (pipeline rate / step rate). Both are
measured on the same CPU one after the other; numbers are medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from input_pipeline import built_step_rate, pipeline_rate  # noqa: E402  (same measurements)


def build_datasets(root: str, data_dir: str, glosses: list[str]) -> None:
    """The datasets from the glosses: plain text, (definition, label: has a usage example
    or not), CoNLL words tagged O / B-EX (quoted words), SQuAD-format span questions
    and cnn_dailymail-format (article, highlights)."""
    from jaxmm.data.corpora import store_rows, wordnet_nouns, wordnet_squad
    from jaxmm.data.local import build_local

    half = len(glosses) * 9 // 10
    for name, rows in (("train", glosses[:half]), ("validation", glosses[half:])):
        with open(os.path.join(root, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
        with open(os.path.join(root, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for g in rows:
                f.write(json.dumps({"text": g.split(";")[0], "label": int('"' in g)}) + "\n")
        with open(os.path.join(root, f"{name}.conll"), "w", encoding="utf-8") as f:
            for g in rows:
                quoted = False
                for word in g.split()[:60]:
                    tag = "B-EX" if word.startswith('"') else ("I-EX" if quoted else "O")
                    quoted = (quoted or word.startswith('"')) and not word.endswith('"')
                    f.write(f"{word} X X {tag}\n")
                f.write("\n")
    splits = {s: {"input": f"{s}.txt"} for s in ("train", "validation")}
    build_local("text", root, splits, data_dir, name="glosses")
    splits = {s: {"input": f"{s}.jsonl"} for s in ("train", "validation")}
    build_local("text-labels", root, splits, data_dir, name="glosses")
    splits = {s: {"input": f"{s}.conll"} for s in ("train", "validation")}
    build_local("conll", root, splits, data_dir, name="glosses",
                classes=["O", "B-EX", "I-EX"])
    nouns = wordnet_nouns()
    store_rows(data_dir, "squad", {
        "train": wordnet_squad(nouns, len(glosses) // 5, seed=0, distractors=24),
        "validation": wordnet_squad(nouns, 200, seed=1, distractors=24)})
    articles = [glosses[i:i + 8] for i in range(0, len(glosses) - 7, 8)]
    rows = [{"article": " ".join(a), "highlights": ". ".join(g.split(";")[0] for g in a[:3]),
             "id": str(i)} for i, a in enumerate(articles)]
    split = len(rows) * 9 // 10
    store_rows(data_dir, "cnn_dailymail", {"train": rows[:split], "validation": rows[split:]})
    # documents of 6 definitions (BERT pre-training pairs) and chats asking for them (SFT)
    defs = [g.split(";")[0].strip() for g in glosses]
    for name, part in (("train", defs[:half]), ("validation", defs[half:])):
        with open(os.path.join(root, f"{name}.docs.jsonl"), "w", encoding="utf-8") as f:
            for i in range(0, len(part) - 5, 6):
                f.write(json.dumps({"text": ". ".join(part[i:i + 6]) + "."}) + "\n")
        with open(os.path.join(root, f"{name}.chat.jsonl"), "w", encoding="utf-8") as f:
            for i in range(0, len(part) - 1, 2):
                f.write(json.dumps({"messages": [
                    {"role": "user", "content": f"Define: {' '.join(part[i].split()[:3])}"},
                    {"role": "assistant", "content": part[i]},
                    {"role": "user", "content": "And this one?"},
                    {"role": "assistant", "content": part[i + 1]}]}) + "\n")
    build_local("text", root, {s: {"input": f"{s}.docs.jsonl"} for s in ("train", "validation")},
                data_dir, name="docs")
    build_local("chat", root, {s: {"input": f"{s}.chat.jsonl"} for s in ("train", "validation")},
                data_dir, name="defs")


def step_rate(config: str, tok, batch: int, steps: int, repeats: int) -> tuple[float, object]:
    """Examples/s of ``config``'s jitted training step on a real batch of its pipeline;
    returns ``(rate, data config)``."""
    import jax

    from jaxmm.config import load_config
    from jaxmm.sharding import make_mesh
    from jaxmm.train import build_run

    built = build_run(load_config(config), mesh=make_mesh(devices=jax.devices()[:1]))
    return built_step_rate(built, tok, batch, steps, repeats), built.config.data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--glosses", type=int, default=20000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="jaxmm-text-bench-")
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, work: str) -> int:
    from jaxmm.data.corpora import wordnet_glosses
    from jaxmm.data.tokenizers import train_tokenizer

    root, data_dir = os.path.join(work, "src"), os.path.join(work, "data")
    os.makedirs(root)
    glosses = wordnet_glosses(limit=args.glosses)
    build_datasets(root, data_dir, glosses)
    tok = train_tokenizer("wordpiece", os.path.join(root, "train.txt"), 8000,
                          out_dir=os.path.join(work, "tok"))
    shared = (f"vocab={tok.vocab_size},tokenizer={os.path.join(work, 'tok')},"
              f"batch={args.batch},data_dir={data_dir}")
    bert = f"size=tiny,seq_len={args.seq_len},{shared}"
    runs = {
        "lm": f"{ROOT}/configs/lm_gpt.py:tiny,data=text/glosses,seq_len={args.seq_len},{shared}",
        "text_classification": f"{ROOT}/configs/glue_bert.py:data=text_labels/glosses,"
                               f"labels=2,{bert}",
        "ner": f"{ROOT}/configs/ner_bert.py:data=conll/glosses,labels=O+B-EX+I-EX,{bert}",
        "extractive_qa": f"{ROOT}/configs/qa_bert.py:data=squad,stride={args.seq_len // 3},"
                         f"{bert}",
        "text2text": f"{ROOT}/configs/t5_text2text.py:size=tiny,data=cnn_dailymail,"
                     f"src_len={args.seq_len},tgt_len={args.seq_len // 4},start=0,eos=3,pad=0,"
                     f"{shared}",
        "pretraining": f"{ROOT}/configs/mlm_bert.py:tiny,nsp=true,data=text/docs,"
                       f"mask={tok.mask_token_id},seq_len={args.seq_len},{shared}",
        "sft_packed": f"{ROOT}/configs/sft_gpt.py:size=tiny,data=chat/defs,pack=true,"
                      f"seq_len={args.seq_len},{shared}",
    }
    results = {}
    for name, config in runs.items():
        step, data_cfg = step_rate(config, tok, args.batch, args.steps, args.repeats)
        pipe = pipeline_rate(data_cfg, tok, args.batch, args.batches, args.repeats)
        results[name] = {"pipeline_examples_per_s": pipe, "step_examples_per_s": step,
                         "headroom": pipe / step}
        print(f"{name:20s} pipeline {pipe:8.0f} ex/s   train step {step:7.0f} ex/s   "
              f"headroom {pipe / step:5.1f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
