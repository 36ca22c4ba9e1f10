"""Small real text corpora available offline, and task datasets made from them.

:func:`wordnet_glosses` reads the ~117k English definitions ("glosses") of
Princeton WordNet 3.0 as shipped by the Debian/Ubuntu package ``wordnet-base``
(``/usr/share/wordnet/data.{noun,verb,adj,adv}``). They are a convenient real
corpus for tokenizer training and small language-model runs.

:func:`wordnet_nouns` gives (noun, definition, usage example) triples, and
:func:`wordnet_squad` SQuAD-style span questions over them (what does NOUN mean? /
what is an example of NOUN?). :func:`store_rows` writes rows as a tfds dataset
(ArrayRecord) with the features of a catalog dataset (``squad``, ``cnn_dailymail``),
so the catalog preset's pipeline reads data made here (tests, benchmarks, or your own
rows in that format).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

__all__ = ["WORDNET_DIR", "store_rows", "wordnet_glosses", "wordnet_nouns", "wordnet_squad"]

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
    glosses: list[str] = []
    for file in _data_files(path, parts):
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


def _data_files(path: str | None, parts: Sequence[str]) -> list[str]:
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
    return files


def wordnet_nouns(
    path: str | None = None, *, limit: int | None = None, max_words: int = 8,
) -> list[tuple[str, str, str]]:
    """``(noun, definition, usage example)`` of one-word WordNet nouns, in file order.

    Kept: nouns of 3-12 letters a-z (each once: its first sense that qualifies) whose
    definition and first quoted usage example are lower-case phrases (letters, spaces,
    ``,'-``) of 3 to ``max_words`` words; the example is lower-cased. E.g.
    ``("clamber", "an awkward climb", "reaching the crest was a real clamber")``.
    ``path``: as :func:`wordnet_glosses`.
    """
    out, seen = [], set()
    phrase = re.compile(r"[a-z][a-z ,'-]*")
    (file,) = _data_files(path, ("noun",))
    with open(file, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" ") or "|" not in line:
                continue
            fields, gloss = line.split("|", 1)
            word = fields.split()[4]
            parts = [p.strip() for p in gloss.split(";")]
            quoted = [p.strip('"') for p in parts[1:] if p.startswith('"')]
            if not re.fullmatch(r"[a-z]{3,12}", word) or word in seen or not quoted:
                continue
            definition, example = parts[0], quoted[0].lower()
            if not all(phrase.fullmatch(t) and 3 <= len(t.split()) <= max_words
                       for t in (definition, example)):
                continue
            seen.add(word)
            out.append((word, definition, example))
            if limit is not None and len(out) == limit:
                break
    return out


def wordnet_squad(
    entries: Sequence[tuple[str, str, str]], n: int, seed: int, distractors: int = 1,
) -> list[dict]:
    """``n`` SQuAD-format rows (``id``, ``title``, ``context``, ``question``,
    ``answers: {text: [..], answer_start: [..]}``) over :func:`wordnet_nouns` entries.

    Each context holds one noun's entry, "NOUN means DEFINITION. for example, EXAMPLE.",
    among ``distractors`` other nouns' definitions (the entry at a random place); the
    question asks either for the meaning ("what does NOUN mean?": the definition) or for
    an example ("what is an example of NOUN?": the usage example), so the answer span
    depends on the question. Deterministic in ``seed``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        (word, gloss, example), *others = (
            entries[j] for j in rng.choice(len(entries), 1 + distractors, replace=False))
        entry = f"{word} means {gloss}. for example, {example}."
        parts = [f"{other[1]}." for other in others]
        parts.insert(distractors - int(rng.integers(distractors + 1)), entry)
        context = " ".join(parts)
        if rng.integers(2):
            question, answer, cue = f"what does {word} mean?", gloss, f"{word} means "
        else:
            question, answer, cue = f"what is an example of {word}?", example, "for example, "
        start = context.index(entry) + entry.index(cue) + len(cue)
        rows.append({"id": f"{seed}-{i}", "title": "wordnet", "context": context,
                     "question": question,
                     "answers": {"text": [answer], "answer_start": [start]}})
    return rows


def _features(layout: str):
    import numpy as np
    import tensorflow_datasets as tfds

    text = tfds.features.Text()
    if layout == "squad":
        return tfds.features.FeaturesDict({
            "id": text, "title": text, "context": text, "question": text,
            "answers": tfds.features.Sequence({"text": text, "answer_start": np.int32})})
    if layout == "cnn_dailymail":
        return tfds.features.FeaturesDict({"article": text, "highlights": text,
                                           "id": text})
    raise ValueError(f"Unknown layout {layout!r}; use 'squad' or 'cnn_dailymail'.")


def store_rows(
    data_dir: str, layout: str, splits: Mapping[str, Sequence[dict]], name: str | None = None,
) -> str:
    """Writes ``splits`` (split -> rows, dicts with the layout's fields) as the tfds
    dataset ``name`` (default: ``layout``) version 1.0.0 in ``data_dir``, ArrayRecord,
    in row order; returns the dataset's folder.

    ``layout``: the catalog dataset whose features the rows have: ``squad`` (``id``,
    ``title``, ``context``, ``question``, ``answers``: ``{text, answer_start}``) or
    ``cnn_dailymail`` (``article``, ``highlights``, ``id``). Read it back with that
    preset (``data=squad`` / ``data=cnn_dailymail``, ``data_dir``; with another
    ``name``, ``--config.data.name=NAME``).
    """
    import tensorflow_datasets as tfds

    builder = tfds.dataset_builders.store_as_tfds_dataset(
        name=name or layout, version="1.0.0", features=_features(layout),
        split_datasets={s: [(str(i), row) for i, row in enumerate(rows)]
                        for s, rows in splits.items()},
        data_dir=data_dir, file_format="array_record", disable_shuffling=True)
    return str(builder.data_dir)
