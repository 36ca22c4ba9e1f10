"""Chat templates for instruction / dialogue fine-tuning (``sft``).

A template gives each role a format with one ``{content}`` field, e.g.
``"User: {content}\\n"``. A conversation (roles and contents) becomes token ids
whose labels are ``-100`` everywhere except the *content and closing text* of the
trained roles (``assistant`` by default): the model learns to answer and to end its
turn, never to predict the prompt, the system text or the role headers.

Built in: ``plain`` (``System:`` / ``User:`` / ``Assistant:`` lines), ``llama3``
(Llama 3's header and ``<|eot_id|>`` markers) and ``chatml`` (``<|im_start|>`` /
``<|im_end|>``). A template of your own is a dict ``{role: format}`` (optionally
``"prefix"``, text before the first turn, and ``"trained"``, the roles to learn).

Each text piece is tokenised on its own, in one batched call per conversation, and
the ids are concatenated (a BPE tokenizer may split a boundary differently from the
whole string; the pieces are what training and generation both see).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxmm.errors import DataError

__all__ = ["TEMPLATES", "ChatTemplate", "encode_chat", "get_template"]

IGNORE_INDEX = -100


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """roles: role -> format with one ``{content}``; trained: the roles whose content
    (and closing text) are labels; prefix: text before the first turn."""

    name: str
    roles: Mapping[str, str]
    trained: tuple[str, ...] = ("assistant",)
    prefix: str = ""

    def __post_init__(self):
        for role, fmt in self.roles.items():
            if fmt.count("{content}") != 1:
                raise DataError(f"Chat template {self.name!r}: the format of role {role!r} "
                                f"must contain '{{content}}' once; got {fmt!r}.")
        missing = [r for r in self.trained if r not in self.roles]
        if missing:
            raise DataError(f"Chat template {self.name!r} trains role(s) {missing} that it "
                            f"does not format (its roles: {', '.join(self.roles)}).")

    def turns(self, roles: Sequence[str], contents: Sequence[str]
              ) -> list[list[tuple[str, bool]]]:
        """``(text, trained)`` pieces of one conversation, grouped by turn (the template's
        prefix goes with the first turn)."""
        if len(roles) != len(contents):
            raise DataError(f"A conversation has {len(roles)} roles but {len(contents)} "
                            "contents.")
        out = []
        for role, content in zip(roles, contents):
            if role not in self.roles:
                raise DataError(
                    f"Chat template {self.name!r} has no role {role!r} (its roles: "
                    f"{', '.join(self.roles)}).",
                    hint="Add the role to the template ({role: 'text {content} text'}) or "
                    "rename it in the data.")
            head, tail = self.roles[role].split("{content}")
            trained = role in self.trained
            out.append([(head, False), (content + tail, trained)] if trained else [
                (head + content + tail, False)])
        if self.prefix:
            out = [[(self.prefix, False)] + (out[0] if out else [])] + out[1:]
        return [[(text, trained) for text, trained in turn if text] for turn in out]

    def pieces(self, roles: Sequence[str], contents: Sequence[str]) -> list[tuple[str, bool]]:
        """``(text, trained)`` pieces of one conversation, in order."""
        return [piece for turn in self.turns(roles, contents) for piece in turn]


TEMPLATES: dict[str, ChatTemplate] = {
    "plain": ChatTemplate("plain", {"system": "System: {content}\n",
                                    "user": "User: {content}\n",
                                    "assistant": "Assistant: {content}\n"}),
    "llama3": ChatTemplate(
        "llama3", {r: f"<|start_header_id|>{r}<|end_header_id|>\n\n{{content}}<|eot_id|>"
                   for r in ("system", "user", "assistant")}, prefix="<|begin_of_text|>"),
    "chatml": ChatTemplate("chatml", {r: f"<|im_start|>{r}\n{{content}}<|im_end|>\n"
                                      for r in ("system", "user", "assistant")}),
}


def get_template(template: str | Mapping[str, Any] | ChatTemplate) -> ChatTemplate:
    """A built-in template by name, a ``{role: format, "prefix": ..., "trained": [...]}``
    dict, or a :class:`ChatTemplate`."""
    if isinstance(template, ChatTemplate):
        return template
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise DataError(f"Unknown chat template {template!r}; built in: "
                            f"{', '.join(TEMPLATES)}, or pass a dict {{role: format}}.")
        return TEMPLATES[template]
    spec = dict(template)
    prefix = spec.pop("prefix", "")
    trained = tuple(spec.pop("trained", ("assistant",)))
    return ChatTemplate("custom", spec, trained=trained, prefix=prefix)


def _tokenized_turns(tokenizer: Any, template: ChatTemplate, roles: Sequence[str],
                     contents: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per turn: its ids and labels (-100 except on the trained text), one tokenizer call."""
    turns = template.turns(roles, contents)
    pieces = [piece for turn in turns for piece in turn]
    if not pieces:
        return []
    enc = tokenizer.encode([text for text, _ in pieces], padding=False, truncation=False,
                           add_special_tokens=False)
    masks = enc.get("attention_mask")
    ids = [np.asarray(x, np.int32).reshape(-1) for x in enc["input_ids"]]
    if masks is not None:  # (a tokenizer may pad the batch even with padding=False)
        ids = [x[np.asarray(m).reshape(-1) > 0] for x, m in zip(ids, masks)]
    labels = [x if trained else np.full_like(x, IGNORE_INDEX)
              for x, (_, trained) in zip(ids, pieces)]
    out, at = [], 0
    for turn in turns:
        part = slice(at, at + len(turn))
        out.append((np.concatenate(ids[part] or [np.zeros([0], np.int32)]),
                    np.concatenate(labels[part] or [np.zeros([0], np.int32)])))
        at += len(turn)
    return out


def encode_chat(tokenizer: Any, template: ChatTemplate, roles: Sequence[str],
                contents: Sequence[str], max_length: int, pad: bool = True
                ) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``labels`` ``(max_length,)`` of one
    conversation: cut at ``max_length``, padded with the tokenizer's pad id (its eos id
    when it has none, as GPT-2; the attention mask and ``-100`` labels mark padding).

    With ``pad=False`` (for packing): ``input_ids`` and ``labels`` unpadded, cut at a
    turn boundary: the longest run of whole turns that fits in ``max_length``, ending
    with a trained turn (a cut at ``max_length`` only when even the first turns do not
    fit), so packed rows never hold part of a turn.
    """
    turns = _tokenized_turns(tokenizer, template, roles, contents)
    ids = [i for i, _ in turns]
    labels = [t for _, t in turns]
    if not pad:
        keep, size = 0, 0
        for n, (i, t) in enumerate(turns, start=1):
            size += len(i)
            if size > max_length:
                break
            if (t != IGNORE_INDEX).any():
                keep = n  # whole turns up to the last trained one that fits
        if keep:
            ids, labels = ids[:keep], labels[:keep]
    flat = np.concatenate(ids)[:max_length] if ids else np.zeros([0], np.int32)
    flat_labels = np.concatenate(labels)[:max_length] if ids else flat
    if not pad:
        return {"input_ids": flat, "labels": flat_labels}
    padding = tokenizer.pad_token_id
    padding = tokenizer.eos_token_id if padding is None else padding
    out_ids = np.full(max_length, 0 if padding is None else padding, np.int32)
    out_ids[:len(flat)] = flat
    mask = (np.arange(max_length) < len(flat)).astype(np.int32)
    out_labels = np.full(max_length, IGNORE_INDEX, np.int32)
    out_labels[:len(flat)] = flat_labels
    return {"input_ids": out_ids, "attention_mask": mask, "labels": out_labels}
