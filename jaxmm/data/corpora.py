"""Small real text corpora available offline.

:func:`wordnet_glosses` reads the ~117k English definitions ("glosses") of
Princeton WordNet 3.0 as shipped by the Debian/Ubuntu package ``wordnet-base``
(``/usr/share/wordnet/data.{noun,verb,adj,adv}``). They are a convenient real
corpus for tokenizer training and small language-model runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["WORDNET_DIR", "wordnet_glosses"]

WORDNET_DIR = "/usr/share/wordnet"
_PARTS = ("noun", "verb", "adj", "adv")


def wordnet_glosses(
    path: str | None = None, *, parts: Sequence[str] = _PARTS, limit: int | None = None,
) -> list[str]:
    """WordNet glosses as a list of strings, in file order (deterministic).

    Each gloss is a definition, often followed by quoted examples, e.g.
    ``'draw air into, and expel out of, the lungs; "I can breathe better ..."'``.

    Args:
      path: folder with WordNet's ``data.*`` files; default ``$JAXMM_WORDNET_DIR``
        or ``/usr/share/wordnet`` (Debian ``wordnet-base``).
      parts: which parts of speech to read, any of noun, verb, adj, adv.
      limit: stop after this many glosses (all if None).

    Raises:
      FileNotFoundError: the WordNet files are missing (with how to install them).
      ValueError: unknown part of speech or a file that is not WordNet data.
    """
    path = path or os.environ.get("JAXMM_WORDNET_DIR") or WORDNET_DIR
    unknown = [p for p in parts if p not in _PARTS]
    if unknown:
        raise ValueError(f"Unknown WordNet part(s) of speech {unknown}; use {', '.join(_PARTS)}.")
    files = [os.path.join(path, f"data.{p}") for p in parts]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"WordNet data files not found: {', '.join(missing)}. Install the Debian/Ubuntu "
            "package 'wordnet-base' (sudo apt-get install wordnet-base), or pass "
            "path=/folder/with/data.noun (or set JAXMM_WORDNET_DIR)."
        )
    glosses: list[str] = []
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                _, sep, gloss = line.partition(" | ")
                if not sep:
                    raise ValueError(f"{file} is not a WordNet data file (line without ' | ').")
                glosses.append(gloss.strip())
                if limit is not None and len(glosses) >= limit:
                    return glosses
    return glosses
