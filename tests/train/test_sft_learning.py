"""Dialogue fine-tuning learns from real text: a tiny GPT trained by ``jaxmm train`` with
``configs/sft_gpt.py:pack=true`` (several whole conversations per row, attention kept
inside each) on conversations that ask for WordNet definitions, scored by ``jaxmm eval``
on held-out conversations: the loss on the replies is far below a unigram model of the
replies (the best a model that ignores context can do)."""

import json
import math
from collections import Counter

import numpy as np
import pytest

from jaxmm.data.local import build_local
from tests.train.helpers import QUICK_CLI, train_and_eval_cli


def definition_chats(limit: int) -> list[dict]:
    """"what is a <noun>?" -> its WordNet definition, with a second exchange about
    another word sense in a third of the conversations."""
    pairs = []
    with open("/usr/share/wordnet/data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith(" ") or "|" not in line:
                continue
            fields, gloss = line.split("|", 1)
            word = fields.split()[4].replace("_", " ")
            definition = gloss.split(";")[0].strip()
            if 3 <= len(definition.split()) <= 12:
                pairs.append((word, definition))
    pairs = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))[:limit]]
    chats = []
    for i in range(0, len(pairs) - 1, 2):
        (w1, d1), (w2, d2) = pairs[i], pairs[i + 1]
        messages = [{"role": "user", "content": f"What is {w1}?"},
                    {"role": "assistant", "content": f"{w1} is {d1}."}]
        if i % 3 == 0:
            messages += [{"role": "user", "content": f"And {w2}?"},
                         {"role": "assistant", "content": f"{w2} is {d2}."}]
        chats.append({"messages": messages})
    return chats


@pytest.mark.slow
@pytest.mark.heavy
def test_packed_sft_learns_to_answer_with_definitions(tmp_path, capsys):
    from jaxmm.data.chat import IGNORE_INDEX, TEMPLATES, encode_chat
    from jaxmm.data.tokenizers import load, train_tokenizer

    chats = definition_chats(4000)
    split = int(0.9 * len(chats))
    root = tmp_path / "chats"
    root.mkdir()
    for name, rows in (("train", chats[:split]), ("valid", chats[split:])):
        (root / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data_dir = str(tmp_path / "data")
    build_local("chat", str(root), {"train": {"input": "train.jsonl"},
                                    "validation": {"input": "valid.jsonl"}}, data_dir, name="wn")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(m["content"] for c in chats for m in c["messages"]))
    train_tokenizer("bpe", str(corpus), 2000, out_dir=str(tmp_path / "tok"))
    tok = load(str(tmp_path / "tok"))

    def replies(rows):
        out = []
        for c in rows:
            roles, contents = zip(*[(m["role"], m["content"]) for m in c["messages"]])
            labels = encode_chat(tok, TEMPLATES["plain"], roles, contents, 96, pad=False)
            out.append(labels["labels"][labels["labels"] != IGNORE_INDEX])
        return out

    # baseline: a unigram model of the training replies (add-one), on the held-out replies
    counts = Counter(np.concatenate(replies(chats[:split])).tolist())
    total = sum(counts.values()) + tok.vocab_size
    held = np.concatenate(replies(chats[split:]))
    unigram = -np.mean([math.log((counts[t] + 1) / total) for t in held.tolist()])

    config = (f"sft_gpt.py:data=chat/wn,pack=true,size=tiny,seq_len=96,steps=500,batch=16,"
              f"vocab={tok.vocab_size},tokenizer={tmp_path / 'tok'},data_dir={data_dir}")
    overrides = [*QUICK_CLI, "--config.optimizer.learning_rate=2e-3",
                 "--config.eval.num_batches=40", "--config.checkpoint.every_steps=500"]
    result = train_and_eval_cli(config, str(tmp_path / "run"), overrides, capsys)
    # what packing bought: conversations and real tokens per 96-token training row
    from jaxmm.data import make_iterator
    from jaxmm.data.catalog import data_config

    cfg = data_config("chat/wn", data_dir=data_dir, max_length=96, packed=True)
    with make_iterator(cfg, split="train", batch_size=16, process_index=0, process_count=1,
                       tokenizer=tok) as it:
        batches = [next(it) for _ in range(10)]
    per_row = np.mean([b["segment_ids"].max(1).mean() for b in batches])
    filled = np.mean([b["attention_mask"].mean() for b in batches])
    cfg = data_config("chat/wn", data_dir=data_dir, max_length=96)
    with make_iterator(cfg, split="train", batch_size=16, process_index=0, process_count=1,
                       tokenizer=tok) as it:
        unpacked = np.mean([next(it)["attention_mask"].mean() for _ in range(10)])
    loss = result["metrics"]["loss"]
    print(f"SFT (packed) on WordNet definition chats: held-out reply loss {loss:.3f} nats/token "
          f"(perplexity {math.exp(loss):.1f}) vs unigram {unigram:.3f} "
          f"(perplexity {math.exp(unigram):.1f}); {per_row:.1f} conversations and "
          f"{100 * filled:.0f}% real tokens per packed row ({100 * unpacked:.0f}% unpacked)")
    assert per_row > 1.4 and filled > 1.3 * unpacked
    assert result["step"] == 500
    assert loss < unigram - 1.0, (loss, unigram)
