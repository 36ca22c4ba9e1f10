"""Hugging Face Hub ids as model folders, through ``huggingface_hub``.

:func:`hub_snapshot` turns a Hub id (``gpt2``, ``org/name``, ``org/name@revision``)
into the local folder of its snapshot in the Hugging Face cache
(``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``). It reads the cache
only, unless ``download=True``; then it fetches what jaxmm reads (configs,
safetensors, tokenizer files; never pickles) when the machine is online.
``HF_HUB_OFFLINE=1`` keeps it on the cache either way.
"""

from __future__ import annotations

import re

from jaxmm.errors import InputError

__all__ = ["HUB_FILE_PATTERNS", "hub_snapshot", "looks_like_hub_id"]

# What the jaxmm loaders read from a Hugging Face folder: configs, safetensors weights
# (and their shard index), tokenizer files. Pickled ``*.bin`` weights are never fetched.
HUB_FILE_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?")


def looks_like_hub_id(text: str) -> bool:
    """``name`` or ``org/name`` (optionally ``@revision``), as the Hub spells repo ids."""
    return bool(_HUB_ID.fullmatch(text)) and ".." not in text


def hub_snapshot(spec: str, *, download: bool = False) -> str:
    """The local snapshot folder of Hub model ``spec`` (``[org/]name[@revision]``).

    Raises :class:`InputError` naming the id and the way on when the snapshot
    is not in the cache (``download=False``), cannot be fetched, or
    ``huggingface_hub`` is not installed.
    """
    repo_id, _, revision = spec.partition("@")
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as e:
        raise InputError(
            f"Model folder {spec!r} does not exist, and reading Hugging Face Hub ids needs "
            "the huggingface_hub package, which is not installed.",
            hint="pip install huggingface_hub, or pass a model folder.") from e
    try:
        return huggingface_hub.snapshot_download(
            repo_id, revision=revision or None, allow_patterns=list(HUB_FILE_PATTERNS),
            local_files_only=not download)
    except LocalEntryNotFoundError as e:
        if download:
            why = "could not be fetched (offline, or HF_HUB_OFFLINE is set) and is not cached"
            hint = "Connect to the network, or save the model to a folder and pass that."
        else:
            why = "is not in the local Hugging Face Hub cache"
            hint = ("Pass --download to fetch it from the Hub, or save the model to a folder "
                    "(transformers: model.save_pretrained(DIR), tokenizer.save_pretrained(DIR)).")
        raise InputError(f"Model folder {spec!r} does not exist, and the Hub id {why}.",
                         hint=hint) from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"Model folder {spec!r} does not exist, and fetching it from the "
                         f"Hugging Face Hub failed: {first}",
                         hint="Check the id (org/name) and your access to it.") from e
