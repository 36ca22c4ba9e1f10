"""VQA accuracy exactly as the official VQA v2 evaluation computes it.

Reference: ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of the VQA
authors' repository (github.com/GT-Vision-Lab/VQA). Two versions of that script
are in use and they score differently, so both are available:

* ``normalize="official"`` (default): the script as released with VQA v2.0
  (its code from October 2016 until March 2021; the 2017 EvalAI challenge
  server, Cloud-CV/VQA-Challenge, splits the work the same way). The prediction
  is always processed (white space, punctuation, then words: lower case, number
  words to digits, articles dropped, contractions spelled out). The human
  answers are left exactly as given when all of them agree; when they disagree
  only the punctuation step runs on them (no lower-casing, no number words, no
  white-space clean-up). So
  ``vqa_score("2", ["two"] * 8 + ["2"] * 2) == 0.6`` and
  ``vqa_score("red", ["Red"] * 6 + ["blue"] * 4) == 0.0``.
* ``normalize="official-2021"``: the script since its March 2021 change
  ("Fixed processing answers bug"). White space is cleaned on both sides;
  punctuation and word processing run on the prediction AND the human answers,
  but only when the humans disagree. The two examples above score 1.0, and
  ``vqa_score("Yes", ["yes"] * 10) == 0.0``. (lmms-eval builds on this version
  but first normalises every prediction with its own processor, so its numbers
  can differ from both.)
* ``normalize="lenient"``: not an official protocol. The prediction and every
  human answer are always fully normalised (:func:`normalize_vqa_answer`).

The processing steps, as the script's code actually behaves:

* punctuation: the marks ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` (not
  ``'`` or ``:``). Each mark is deleted if the text contains a digit-comma-digit
  ("1,000") or that mark next to a space anywhere in the text; otherwise every
  occurrence becomes a space ("black-and-white" -> "black and white"). Then
  every period not followed by a digit is deleted (the script's look-behind for
  a preceding digit is written as a look-ahead and never applies, so "2." -> "2"
  but "2.5" and ".5" keep theirs), at most 32 of them (the script passes its
  regex flag where the replacement count goes). Digits are ASCII only, as in
  the Python 2 script.
* words: lower case, split on white space, "none"/"zero".."ten" to "0".."10",
  drop "a", "an", "the", then replace spellings without apostrophes by the
  contraction ("dont" -> "don't") from the script's table, including its oddities
  ("somebody'd" -> "somebodyd"; "lets", "shes", "im", "id", "were", "well" and
  "ill" are not in it; its capitalised keys never match).

Accuracy of a prediction against the human answers (VQA v2 has 10) is the
mean, over leaving each human out in turn, of ``min(#other humans who gave it
/ 3, 1)``; ``average_subsets=False`` gives the plain ``min(#humans / 3, 1)``.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence

__all__ = ["VQA_NORMALIZATIONS", "normalize_vqa_answer", "vqa_accuracy", "vqa_score"]

VQA_NORMALIZATIONS = ("official", "official-2021", "lenient")

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">",
                "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"[0-9],[0-9]")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?![0-9])")
_MAX_PERIODS_REMOVED = 32  # re.UNICODE (== 32) sits in the script's count argument
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})


def _contraction_table() -> dict[str, str]:
    """The script's contraction table: each contraction is reached from its spellings
    with exactly one apostrophe left out ("couldnt've" and "couldn'tve" -> "couldn't've"),
    plus the table's irregular entries."""
    contracted = (
        "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't "
        "hadn't've hasn't haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've "
        "it'll ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock "
        "oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've "
        "somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
        "something'd've something'll that's there'd there'd've there're there's they'd "
        "they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll "
        "what're what's what've when's where'd where's where've who'd who'd've who'll who's "
        "who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll "
        "y'all'd've you'd you'd've you'll you're you've"
    ).split()
    table = {}
    for word in contracted:
        for i, ch in enumerate(word):
            if ch == "'":
                table[word[:i] + word[i + 1:]] = word
    table.update({
        "let's": "let's", "she's": "she's",  # listed as themselves: "lets", "shes" stay
        "somebody'd": "somebodyd",  # listed the wrong way round
        # Capitalised keys: words are lower-cased before the lookup, so these never apply.
        "Im": "I'm", "Ive": "I've", "Id've": "I'd've", "I'dve": "I'd've",
    })
    return table


_CONTRACTIONS = _contraction_table()


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def _process_words(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_vqa_answer(answer: str) -> str:
    """Everything the official script does to an answer: white space, punctuation, words.

    ``"Two."`` -> ``"2"``, ``"the dog"`` -> ``"dog"``, ``"dont"`` -> ``"don't"``,
    ``"1,000"`` -> ``"1000"``, ``"black-and-white"`` -> ``"black and white"``. See the
    module docstring for when the official protocol applies it to which side.
    """
    return _process_words(_process_punctuation(_clean_whitespace(answer)))


def _check_normalize(normalize: str) -> None:
    if normalize not in VQA_NORMALIZATIONS:
        raise ValueError(f"Unknown VQA normalize={normalize!r}; choose one of "
                         f"{VQA_NORMALIZATIONS} ('official' is the VQA v2 evaluation).")


def _compared_strings(prediction: str, answers: Sequence[str],
                      normalize: str) -> tuple[str, list[str]]:
    """The prediction and human answers in the form the chosen protocol compares them."""
    if normalize == "lenient":
        return normalize_vqa_answer(prediction), [normalize_vqa_answer(a) for a in answers]
    if normalize == "official":
        gold = list(answers)
        if len(set(gold)) > 1:
            gold = [_process_punctuation(a) for a in gold]
        return normalize_vqa_answer(prediction), gold
    pred, gold = _clean_whitespace(prediction), [_clean_whitespace(a) for a in answers]
    if len(set(gold)) > 1:
        gold = [_process_words(_process_punctuation(a)) for a in gold]
        pred = _process_words(_process_punctuation(pred))
    return pred, gold


def vqa_score(prediction: str, answers: Sequence[str], average_subsets: bool = True, *,
              normalize: str = "official") -> float:
    """Accuracy in [0, 1] of one predicted answer against the human ``answers`` (10 in VQA v2).

    Args:
      prediction: the model's answer.
      answers: the human answers, duplicates included (their agreement matters).
      average_subsets: average ``min(#matches / 3, 1)`` over the leave-one-out subsets
        (the official rule, needs at least 2 answers); False: ``min(#matches / 3, 1)``
        over all answers.
      normalize: ``"official"`` (VQA v2 release), ``"official-2021"`` or ``"lenient"``
        (see the module docstring).
    """
    _check_normalize(normalize)
    if not answers:
        raise ValueError("A question needs at least one human answer.")
    if average_subsets and len(answers) < 2:
        raise ValueError("The official VQA accuracy leaves out each human answer in turn, so it "
                         "needs at least 2 (VQA v2 has 10); with one gold answer pass it ten "
                         "times ([answer] * 10) or use average_subsets=False.")
    pred, gold = _compared_strings(prediction, answers, normalize)
    matches = [g == pred for g in gold]
    total = sum(matches)
    if not average_subsets:
        return min(total / 3.0, 1.0)
    return sum(min((total - m) / 3.0, 1.0) for m in matches) / len(gold)


def vqa_accuracy(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    answer_types: Sequence[str] | None = None,
    average_subsets: bool = True,
    *,
    normalize: str = "official",
) -> dict[str, float]:
    """Overall VQA accuracy (percent), and per answer type when ``answer_types`` is given.

    The mean of :func:`vqa_score` over the questions, as the official script's
    ``overall`` and ``perAnswerType`` (which it rounds to 2 decimals; these are not
    rounded). For datasets with ONE gold answer per question (e.g. the built-in
    scenes), pass it ten times (``[[a] * 10 for a in gold]``) so a correct answer
    scores 1.

    Returns:
      ``{"accuracy": ..., "accuracy/<type>": ...}``.
    """
    _check_normalize(normalize)
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists.")
    if answer_types is not None and len(answer_types) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(answer_types)} answer types.")
    if not predictions:
        raise ValueError("No predictions to score.")
    scores = [vqa_score(p, a, average_subsets, normalize=normalize)
              for p, a in zip(predictions, answers)]
    out = {"accuracy": 100.0 * sum(scores) / len(scores)}
    if answer_types is not None:
        by_type: Mapping[str, list] = collections.defaultdict(list)
        for s, t in zip(scores, answer_types):
            by_type[t].append(s)
        for t, v in sorted(by_type.items()):
            out[f"accuracy/{t}"] = 100.0 * sum(v) / len(v)
    return out
