"""Chat templates and SFT data: the rendered conversation equals the template's text,
labels cover exactly the replies, bad conversations are counted, and sft_gpt trains on
conversations built with ``jaxmm data build-chat``."""

import json
import math

import numpy as np
import pytest

from jaxmm.data import make_iterator
from jaxmm.data.chat import IGNORE_INDEX, TEMPLATES, encode_chat, get_template
from jaxmm.data.local import build_local
from jaxmm.data.sources import DataError
from tests.train.helpers import QUICK_CLI, train_and_eval_cli

CONVERSATION = (["system", "user", "assistant", "user", "assistant"],
                ["You are terse.", "What colour is the sky?", "Blue.", "And grass?",
                 "Green, mostly."])


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A byte-level BPE tokenizer: decoding gives back the exact text."""
    from jaxmm.data.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("chat_tok")
    text = " ".join(CONVERSATION[1]) + " System: User: Assistant: <|im_start|> <|im_end|>"
    (root / "corpus.txt").write_text((text + "\n") * 20)
    tok = train_tokenizer("bpe", str(root / "corpus.txt"), 300, min_frequency=1,
                          out_dir=str(root / "tok"))
    return tok


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_rendering_and_labels_follow_the_template_text(bpe, name):
    template = TEMPLATES[name]
    roles, contents = CONVERSATION
    out = encode_chat(bpe, template, roles, contents, max_length=600)
    n = int(out["attention_mask"].sum())
    assert n < 600
    # the ids decode to the conversation formatted with the template (plain str.format)
    want = template.prefix + "".join(template.roles[r].format(content=c)
                                     for r, c in zip(roles, contents))
    assert bpe.decode(out["input_ids"][:n], skip_special_tokens=False) == want
    # the labelled tokens are exactly the replies with the text that closes them
    closing = {r: f.split("{content}")[1] for r, f in template.roles.items()}
    replies = "".join(c + closing[r] for r, c in zip(roles, contents) if r == "assistant")
    labelled = out["labels"][out["labels"] != IGNORE_INDEX]
    assert bpe.decode(labelled, skip_special_tokens=False) == replies
    np.testing.assert_array_equal(out["labels"][out["labels"] != IGNORE_INDEX],
                                  out["input_ids"][out["labels"] != IGNORE_INDEX])
    assert (out["input_ids"][n:] == bpe.pad_token_id).all()
    assert (out["labels"][n:] == IGNORE_INDEX).all() and out["attention_mask"][n:].sum() == 0


class _NoPad:
    """The tokenizer as GPT-2's: no pad token."""

    def __init__(self, tok):
        self.tok, self.pad_token_id, self.eos_token_id = tok, None, tok.eos_token_id

    def encode(self, *args, **kwargs):
        return self.tok.encode(*args, **kwargs)


def test_a_tokenizer_without_pad_pads_with_eos_masked_out(bpe):
    out = encode_chat(_NoPad(bpe), TEMPLATES["plain"], *CONVERSATION, max_length=200)
    n = int(out["attention_mask"].sum())
    assert (out["input_ids"][n:] == bpe.eos_token_id).all() and bpe.eos_token_id is not None
    assert (out["labels"][n:] == IGNORE_INDEX).all()


def test_truncation_keeps_labels_aligned(bpe):
    full = encode_chat(bpe, TEMPLATES["plain"], *CONVERSATION, max_length=200)
    cut = encode_chat(bpe, TEMPLATES["plain"], *CONVERSATION, max_length=12)
    np.testing.assert_array_equal(cut["input_ids"], full["input_ids"][:12])
    np.testing.assert_array_equal(cut["labels"], full["labels"][:12])
    assert cut["attention_mask"].sum() == 12


def test_template_errors_are_one_clear_line():
    with pytest.raises(DataError, match="has no role 'tool' \\(its roles: system, user"):
        TEMPLATES["plain"].pieces(["user", "tool"], ["a", "b"])
    with pytest.raises(DataError, match="must contain '\\{content\\}' once"):
        get_template({"user": "U: ", "assistant": "A: {content}"})
    with pytest.raises(DataError, match="trains role\\(s\\) \\['bot'\\]"):
        get_template({"user": "{content}", "trained": ["bot"]})
    with pytest.raises(DataError, match="Unknown chat template 'llama2'"):
        get_template("llama2")
    custom = get_template({"human": "H: {content}\n", "bot": "B: {content}\n",
                           "trained": ["bot"], "prefix": "<chat>"})
    assert custom.pieces(["human", "bot"], ["hi", "yo"]) == [
        ("<chat>", False), ("H: hi\n", False), ("B: ", False), ("yo\n", True)]


def _write_chats(path, extra_lines=(), repeat=1):
    rows = [{"messages": [{"role": r, "content": c} for r, c in zip(*CONVERSATION)]},
            {"messages": [{"role": "user", "content": "Name a fruit."},
                          {"role": "assistant", "content": "Apple."}]}]
    lines = [json.dumps(r) for r in rows] * repeat + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


def test_build_chat_counts_bad_conversations_and_the_pipeline_matches(bpe, tmp_path):
    root = tmp_path / "chats"
    root.mkdir()
    _write_chats(root / "train.jsonl", [
        "{not json", json.dumps({"text": "no messages"}),
        json.dumps({"messages": [{"role": "tool", "content": "x"}]})])
    out = str(tmp_path / "data")
    summary = build_local("chat", str(root), {"train": {"input": "train.jsonl"}}, out,
                          name="c", template="plain")
    assert summary["splits"] == {"train": 2} and summary["skipped"] == {"train": 3}
    with make_iterator({"name": "jaxmm_local_chat/c", "data_dir": out,
                        "pp": "chat(64, template='chatml')"}, split="train", batch_size=1,
                       shuffle=False, repeat=False, process_index=0, process_count=1,
                       tokenizer=bpe) as it:
        first = next(it)
    want = encode_chat(bpe, TEMPLATES["chatml"], *CONVERSATION, max_length=64)
    for key in ("input_ids", "attention_mask", "labels"):
        np.testing.assert_array_equal(first[key][0], want[key])
    with pytest.raises(DataError, match="Unknown chat template"):
        build_local("chat", str(root), {"train": {"input": "train.jsonl"}}, out, name="d",
                    template="nope")


@pytest.mark.slow
def test_sft_config_trains_on_built_conversations(bpe, tmp_path, capsys):
    root = tmp_path / "chats"
    root.mkdir()
    _write_chats(root / "train.jsonl", repeat=4)
    _write_chats(root / "valid.jsonl", repeat=4)
    out = str(tmp_path / "data")
    build_local("chat", str(root), {"train": {"input": "train.jsonl"},
                                    "validation": {"input": "valid.jsonl"}}, out, name="c")
    tok_dir = str(tmp_path / "tok")
    bpe.save(tok_dir)
    config = (f"sft_gpt.py:data=chat/c,template=llama3,size=tiny,seq_len=48,"
              f"vocab={bpe.vocab_size},tokenizer={tok_dir},data_dir={out}")
    overrides = ["--config.batch_size=8", "--config.num_steps=2", *QUICK_CLI]
    result = train_and_eval_cli(config, str(tmp_path / "run"), overrides, capsys)
    assert result["step"] == 2 and math.isfinite(result["metrics"]["loss"])


# -- packing: several whole conversations per row ----------------------------------

def test_unpadded_encoding_cuts_at_a_turn_boundary_after_a_reply(bpe):
    template = TEMPLATES["plain"]
    full = encode_chat(bpe, template, *CONVERSATION, max_length=600)
    n = int(full["attention_mask"].sum())
    whole = encode_chat(bpe, template, *CONVERSATION, max_length=n, pad=False)
    np.testing.assert_array_equal(whole["input_ids"], full["input_ids"][:n])
    np.testing.assert_array_equal(whole["labels"], full["labels"][:n])
    first = encode_chat(bpe, template, *[x[:3] for x in CONVERSATION], max_length=600)
    k = int(first["attention_mask"].sum())  # system, user, assistant
    for limit in (k, n - 1):  # the second exchange does not fit: it is left out whole
        cut = encode_chat(bpe, template, *CONVERSATION, max_length=limit, pad=False)
        np.testing.assert_array_equal(cut["input_ids"], first["input_ids"][:k])
        np.testing.assert_array_equal(cut["labels"], first["labels"][:k])
    # not even the first exchange fits: cut at max_length, as the padded form
    short = encode_chat(bpe, template, *CONVERSATION, max_length=k - 1, pad=False)
    np.testing.assert_array_equal(short["input_ids"], full["input_ids"][:k - 1])


def _chat_dataset(bpe, tmp_path):
    rng = np.random.default_rng(0)
    words = CONVERSATION[1]
    rows = []
    for _ in range(40):
        turns = int(rng.integers(1, 4))
        messages = [{"role": "system", "content": "You are terse."}] if rng.random() < .3 else []
        for _ in range(turns):
            messages += [{"role": "user", "content": str(rng.choice(words))},
                         {"role": "assistant", "content": " ".join(rng.choice(words, 2))}]
        rows.append({"messages": messages})
    root = tmp_path / "chats"
    root.mkdir()
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    build_local("chat", str(root), {"train": {"input": "train.jsonl"}}, str(tmp_path / "d"),
                name="p")
    return str(tmp_path / "d")


def test_packed_rows_hold_whole_conversations_with_their_labels(bpe, tmp_path):
    from jaxmm.data.catalog import data_config

    data_dir = _chat_dataset(bpe, tmp_path)
    kw = dict(split="train", seed=1, process_index=0, process_count=1, tokenizer=bpe)
    packed_cfg = data_config("chat/p", data_dir=data_dir, max_length=64, packed=True)
    with make_iterator(packed_cfg, batch_size=2, **kw) as it:
        rows = [next(it) for _ in range(6)]
    plain = data_config("chat/p", data_dir=data_dir, max_length=64, packed=True)
    del plain["pack"]
    with make_iterator(plain, batch_size=1, **kw) as it:  # the same stream, one per row
        singles = [next(it) for _ in range(64)]
    segments = []
    for batch in rows:
        for r in range(2):
            seg, pos = batch["segment_ids"][r], batch["positions"][r]
            assert (batch["attention_mask"][r] == (seg > 0)).all()
            for s in range(1, seg.max() + 1):
                at = np.flatnonzero(seg == s)
                assert (pos[at] == np.arange(len(at))).all()
                segments.append((batch["input_ids"][r, at], batch["labels"][r, at]))
    # rows are filled first-fit within a window, so compare as multisets of the window
    want = {tuple(s["input_ids"][0]): s["labels"][0] for s in singles}
    assert len(segments) > 12
    for ids, labels in segments:
        assert tuple(ids) in want  # a whole conversation (cut at a turn boundary)
        assert labels[0] == IGNORE_INDEX  # never predicted from the previous segment
        np.testing.assert_array_equal(labels[1:], want[tuple(ids)][1:])
    assert any(b["segment_ids"].max() > 1 for b in rows)  # several per row


def test_packed_loss_equals_each_conversation_alone(bpe):
    """The lm task on a packed row (segment_ids, positions) gives exactly the summed
    reply loss of its conversations run one per row."""
    import jax

    from jaxmm.data.packing import pack_sequences
    from jaxmm.models import build
    from jaxmm.train.tasks import get_task

    convs = [encode_chat(bpe, TEMPLATES["plain"], *c, max_length=64, pad=False) for c in (
        CONVERSATION, (["user", "assistant"], ["Name a fruit.", "Apple."]))]
    packed = pack_sequences([c["input_ids"] for c in convs], 96, "segments",
                            labels=[c["labels"] for c in convs])
    assert packed["input_ids"].shape == (1, 96) and packed["segment_ids"].max() == 2
    model = build("gpt", "tiny", vocab_size=bpe.vocab_size, num_layers=1)
    task = get_task("lm").from_config({}, model)
    variables = task.init(jax.random.key(0), {k: v for k, v in packed.items()})
    together = task.loss(variables, packed, train=False, rng=jax.random.key(1))
    total, count = 0.0, 0.0
    for c in convs:
        alone = {"input_ids": c["input_ids"][None], "labels": c["labels"][None],
                 "attention_mask": np.ones((1, len(c["input_ids"])), np.int32)}
        out = task.loss(variables, alone, train=False, rng=jax.random.key(1))
        total, count = total + float(out.loss), count + float(out.weight)
    assert float(together.weight) == count
    assert float(together.loss) == pytest.approx(total, rel=1e-5)
