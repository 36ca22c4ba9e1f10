"""VQA accuracy with the official answer normalisation and 10-choose-9 averaging.

Normalisation follows the VQA evaluation rules: newlines/tabs to spaces;
punctuation is removed (or turned into a space when it joins two words), a
period is kept only inside numbers ("2.5"), commas inside numbers ("1,000")
are removed; then lower case, number words become digits ("two" -> "2"),
the articles a/an/the are dropped, and apostrophe-less contractions get
their apostrophe ("dont" -> "don't"). The prediction is always normalised;
gold answers are normalised the same way only when the annotators disagree,
as the official script does. (The original GT-Vision-Lab script also skips
normalising the *prediction* when all annotators agree, so "two" scores 0
against ten "2"s; most evaluation code since, and jaxmm, normalise it always.)

Accuracy of a prediction against the 10 human answers is
``min(#humans that gave it / 3, 1)``, averaged over the 10 subsets of 9
humans (the official definition); :func:`vqa_score` with
``average_subsets=False`` gives the simple ``min(#matches / 3, 1)``.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence

__all__ = ["normalize_vqa_answer", "vqa_accuracy", "vqa_score"]

_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">",
                "<", "@", "`", ",", "?", "!"]
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# Contractions written without their apostrophe -> with it.
_CONTRACTIONS = {
    c.replace("'", ""): c for c in (
        "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't "
        "hadn't've hasn't haven't he'd he'd've he's how'd how'll how's i'd i'd've i'll i'm "
        "i've isn't it'd it'd've it'll let's ma'am mightn't mightn't've might've mustn't "
        "must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've she'd she'll she's "
        "should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's "
        "someone'd someone'd've someone'll someone's something'd something'd've something'll "
        "that's there'd there'd've there're there's they'd they'd've they'll they're they've "
        "'twas wasn't we'd've we'd we'll we're we've weren't what'll what're what's what've "
        "when's where'd where's where've who'd who'd've who'll who're who's who've why'll "
        "why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd "
        "you'd've you'll you're you've"
    ).split()
}
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")


def _punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_IN_NUMBER.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _digits_articles(text: str) -> str:
    words = []
    for w in text.lower().split():
        w = _NUMBERS.get(w, w)
        if w not in _ARTICLES:
            words.append(_CONTRACTIONS.get(w, w))
    return " ".join(words)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQA answer normalisation (see the module docstring)."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(answer))


def vqa_score(prediction: str, answers: Sequence[str], average_subsets: bool = True) -> float:
    """Accuracy of one prediction against the human ``answers`` (usually 10)."""
    if not answers:
        raise ValueError("A question needs at least one human answer.")
    pred = normalize_vqa_answer(prediction)
    gold = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(gold)) > 1:
        gold = [normalize_vqa_answer(a) for a in gold]
    matches = [g == pred for g in gold]
    if not average_subsets or len(gold) == 1:
        return min(sum(matches) / 3.0, 1.0)
    total = sum(matches)
    # Leave out each human in turn: the others' matches are total - matches[i].
    return sum(min((total - m) / 3.0, 1.0) for m in matches) / len(gold)


def vqa_accuracy(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    answer_types: Sequence[str] | None = None,
    average_subsets: bool = True,
) -> dict[str, float]:
    """Overall VQA accuracy (percent), and per answer type when ``answer_types`` is given.

    For datasets with ONE gold answer per question (e.g. the built-in scenes),
    pass it ten times (``[[a] * 10 for a in gold]``) so a correct answer scores 1.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
    scores = [vqa_score(p, a, average_subsets) for p, a in zip(predictions, answers)]
    out = {"accuracy": 100.0 * sum(scores) / len(scores)}
    if answer_types is not None:
        by_type: Mapping[str, list] = collections.defaultdict(list)
        for s, t in zip(scores, answer_types):
            by_type[t].append(s)
        for t, v in sorted(by_type.items()):
            out[f"accuracy/{t}"] = 100.0 * sum(v) / len(v)
    return out
