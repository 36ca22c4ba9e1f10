"""VQA accuracy against a step-by-step restatement of the official VQA v2 evaluation.

The reference below restates ``VQAEval.evaluate`` of GT-Vision-Lab/VQA
(``PythonEvaluationTools/vqaEvaluation/vqaEval.py``) in the order the script does
things, with its data (punctuation list, number words, articles, contraction table)
and its regexes as they behave under the Python 2 the script is written for (ASCII
``\\d``; the ``re.UNICODE`` flag passed where the replacement count goes). It is kept
deliberately literal (answer dicts with ids, leave-one-out by dict inequality) so that
it shares no code with ``jaxmm.evaluate.vqa``.
"""

import random
import re

import pytest

from jaxmm import evaluate as ev

# ---------------------------------------------------------------------------------------
# Reference: the official procedure, restated.
# ---------------------------------------------------------------------------------------
REF_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
             "@", "`", ",", "?", "!"]
REF_MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                  "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
REF_ARTICLES = ["a", "an", "the"]
# The script's contraction table, key>value (120 entries, its oddities included).
REF_CONTRACTIONS = dict(pair.split(">") for pair in """
    'ow'sat>'ow's'at 'ows'at>'ow's'at aint>ain't arent>aren't cant>can't couldn'tve>couldn't've
    couldnt>couldn't couldnt've>couldn't've couldve>could've didnt>didn't doesnt>doesn't
    dont>don't hadn'tve>hadn't've hadnt>hadn't hadnt've>hadn't've hasnt>hasn't havent>haven't
    he'dve>he'd've hed>he'd hed've>he'd've hes>he's howd>how'd howll>how'll hows>how's
    I'dve>I'd've Id've>I'd've Im>I'm isnt>isn't it'dve>it'd've itd>it'd itd've>it'd've
    itll>it'll Ive>I've let's>let's maam>ma'am mightn'tve>mightn't've mightnt>mightn't
    mightnt've>mightn't've mightve>might've mustnt>mustn't mustve>must've neednt>needn't
    notve>not've oclock>o'clock oughtnt>oughtn't ow's'at>'ow's'at shant>shan't she'dve>she'd've
    she's>she's shed've>she'd've shouldn'tve>shouldn't've shouldnt>shouldn't
    shouldnt've>shouldn't've shouldve>should've somebody'd>somebodyd somebody'dve>somebody'd've
    somebodyd've>somebody'd've somebodyll>somebody'll somebodys>somebody's
    someone'dve>someone'd've someoned>someone'd someoned've>someone'd've someonell>someone'll
    someones>someone's something'dve>something'd've somethingd>something'd
    somethingd've>something'd've somethingll>something'll thats>that's there'dve>there'd've
    thered>there'd thered've>there'd've therere>there're theres>there's they'dve>they'd've
    theyd>they'd theyd've>they'd've theyll>they'll theyre>they're theyve>they've twas>'twas
    wasnt>wasn't we'dve>we'd've wed've>we'd've werent>weren't weve>we've whatll>what'll
    whatre>what're whats>what's whatve>what've whens>when's whered>where'd wheres>where's
    whereve>where've who'dve>who'd've whod>who'd whod've>who'd've wholl>who'll whos>who's
    whove>who've whyll>why'll whyre>why're whys>why's wont>won't wouldn'tve>wouldn't've
    wouldnt>wouldn't wouldnt've>wouldn't've wouldve>would've y'all'dve>y'all'd've
    y'alld've>y'all'd've y'allll>y'all'll yall>y'all yall'd've>y'all'd've yall'll>y'all'll
    you'dve>you'd've youd>you'd youd've>you'd've youll>you'll youre>you're youve>you've
""".split())
# The script's two patterns, compiled as Python 2 compiles them (no UNICODE flag).
REF_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
REF_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)


def ref_process_punctuation(in_text):
    out_text = in_text
    for p in REF_PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (
                re.search(REF_COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    # periodStrip.sub("", outText, re.UNICODE): the flag is the third positional
    # argument of Pattern.sub, which is the replacement count.
    return REF_PERIOD_STRIP.sub("", out_text, count=int(re.UNICODE))


def ref_process_digit_article(in_text):
    out_text = []
    for word in in_text.lower().split():
        word = REF_MANUAL_MAP.get(word, word)  # the script: manualMap.setdefault(word, word)
        if word not in REF_ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in REF_CONTRACTIONS:
            out_text[word_id] = REF_CONTRACTIONS[word]
    return " ".join(out_text)


def ref_whitespace(text):
    return text.replace("\n", " ").replace("\t", " ").strip()


def ref_question_accuracy(prediction, human_answers, version="v2.0"):
    """One question of ``VQAEval.evaluate``: ``version`` "v2.0" is the script as released
    with VQA v2 (2016-2021); "2021" the script after its March 2021 change."""
    answers = [{"answer": a, "answer_id": i + 1, "answer_confidence": "yes"}
               for i, a in enumerate(human_answers)]
    if version == "2021":
        for ans_dic in answers:
            ans_dic["answer"] = ref_whitespace(ans_dic["answer"])
    res_ans = ref_whitespace(prediction)
    if version == "v2.0":
        res_ans = ref_process_punctuation(res_ans)
        res_ans = ref_process_digit_article(res_ans)
    gt_answers = [ans["answer"] for ans in answers]
    if len(set(gt_answers)) > 1:
        for ans_dic in answers:
            ans_dic["answer"] = ref_process_punctuation(ans_dic["answer"])
            if version == "2021":
                ans_dic["answer"] = ref_process_digit_article(ans_dic["answer"])
        if version == "2021":
            res_ans = ref_process_digit_article(ref_process_punctuation(res_ans))
    gt_acc = []
    for gt_ans_datum in answers:
        other_gt_ans = [item for item in answers if item != gt_ans_datum]
        matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
        gt_acc.append(min(1, float(len(matching_ans)) / 3))
    return float(sum(gt_acc)) / len(gt_acc)


def ref_lenient(prediction, human_answers):
    """The documented non-official option: everything normalised, then the same averaging."""
    norm = lambda t: ref_process_digit_article(ref_process_punctuation(ref_whitespace(t)))  # noqa: E731
    return ref_question_accuracy(norm(prediction), [norm(a) for a in human_answers], "2021")


def ten(*groups):
    return [answer for answer, count in groups for _ in range(count)]


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------
def test_issue_examples_official_by_default():
    """The two cases from the issue, and what each documented option gives for them."""
    two = ten(("two", 8), ("2", 2))
    red = ten(("Red", 6), ("blue", 4))
    assert ref_question_accuracy("2", two) == pytest.approx(0.6)
    assert ev.vqa_score("2", two) == pytest.approx(0.6)
    assert ev.vqa_score("red", red) == 0.0 == ref_question_accuracy("red", red)
    # The 2021 script processes the human answers (only when they disagree).
    assert ev.vqa_score("2", two, normalize="official-2021") == 1.0
    assert ev.vqa_score("red", red, normalize="official-2021") == 1.0
    assert ref_question_accuracy("red", red, "2021") == 1.0
    # ... and then leaves the prediction raw when they agree.
    assert ev.vqa_score("Yes", ["yes"] * 10, normalize="official-2021") == 0.0
    assert ev.vqa_score("Yes", ["yes"] * 10) == 1.0
    assert ev.vqa_score("yes", ["Yes"] * 10) == 0.0  # agreeing humans are compared as given
    assert ev.vqa_score("yes", ["Yes"] * 10, normalize="lenient") == 1.0
    assert ev.vqa_score("2", two, normalize="lenient") == 1.0
    out = ev.vqa_accuracy(["2", "red"], [two, red])
    assert out["accuracy"] == pytest.approx(30.0)
    assert ev.vqa_accuracy(["2", "red"], [two, red], normalize="lenient")["accuracy"] == 100.0


@pytest.mark.parametrize("raw,norm", [
    ("Two.", "2"), ("the dog", "dog"), ("dont", "don't"), ("yes!", "yes"),
    ("1,000", "1000"), ("2.5", "2.5"), ("black-and-white", "black and white"),
    ("An Apple", "apple"), ("none", "0"), ("red, white", "red white"),
    # periods: kept only before a digit (the look-behind never applies)
    ("2.", "2"), (".5", ".5"), ("e.g.", "eg"), ("U.S.A.", "usa"), ("3.14.", "3.14"),
    # a digit-comma-digit anywhere deletes every mark instead of spacing it
    ("1,000 (approx)", "1000 approx"), ("1,2-3", "123"), ("1, 2-3", "1 2 3"),
    # a mark next to a space is deleted everywhere in the text, otherwise spaced
    ("a/b", "b"), ("x / y-z", "x y z"), ("left - right", "left right"),
    # ' and : are not in the script's list
    ("dog's", "dog's"), ("3:00", "3:00"), ("don't", "don't"),
    # the contraction table as it is
    ("somebody'd", "somebodyd"), ("Im", "im"), ("shes", "shes"), ("were", "were"),
    ("well", "well"), ("ill", "ill"), ("twas", "'twas"), ("couldnt've", "couldn't've"),
    ("\tTen\n", "10"), ("", ""), ("The", ""), ("a an the", ""), ("Eight!", "8"),
])
def test_normalisation_edge_cases(raw, norm):
    assert ev.normalize_vqa_answer(raw) == norm
    assert ref_process_digit_article(ref_process_punctuation(ref_whitespace(raw))) == norm


def test_contraction_table_words_match_reference():
    """Every key and value of the script's table, and words it does not contain."""
    words = list(REF_CONTRACTIONS) + list(REF_CONTRACTIONS.values()) + [
        "lets", "shes", "im", "ive", "id", "were", "well", "ill", "wed", "its", "somebodyd",
        "hell", "shell", "i'm", "DONT", "Don't", "couldntve"]
    for word in words:
        expected = ref_process_digit_article(ref_process_punctuation(ref_whitespace(word)))
        assert ev.normalize_vqa_answer(word) == expected, word


def test_period_removal_stops_after_32():
    text = "." * 40 + "x"
    assert ev.normalize_vqa_answer(text) == "." * 8 + "x" == ref_process_punctuation(text)


def _random_question(rng):
    tokens = ["2", "two", "Two", "2.", "2.5", ".5", "1,000", "none", "ten", "a", "The", "dog",
              "Dog", "dog's", "red", "Red", "dont", "don't", "somebody'd", "shes", "Im", "were",
              "yes", "Yes", "no.", "yes!", "black-and-white", "(left)", "a/b", "a / b", "e.g.",
              '"q"', "x;y", "x; y", "caf\u00e9", "\u0663", "1,2", "1 ,2", "eight", "-", "?"]
    seps = [" ", " ", "", "  ", "\t", "\n", ","]

    def phrase():
        words = [rng.choice(tokens) for _ in range(rng.choice([1, 1, 2, 3]))]
        text = "".join(w + rng.choice(seps) for w in words[:-1]) + words[-1]
        return rng.choice(["", "", " ", "\n"]) + text + rng.choice(["", "", " ", "\t", "."])

    pool = [phrase() for _ in range(rng.choice([1, 2, 3]))]
    humans = [rng.choice(pool) for _ in range(10)]
    prediction = rng.choice(pool) if rng.random() < 0.7 else phrase()
    return prediction, humans


def test_random_questions_match_reference_in_every_mode():
    rng = random.Random(0)
    questions = [_random_question(rng) for _ in range(1500)]
    for pred, humans in questions:
        assert ev.vqa_score(pred, humans) == ref_question_accuracy(pred, humans), (pred, humans)
        assert (ev.vqa_score(pred, humans, normalize="official-2021")
                == ref_question_accuracy(pred, humans, "2021")), (pred, humans)
        assert (ev.vqa_score(pred, humans, normalize="lenient")
                == ref_lenient(pred, humans)), (pred, humans)
    # The data exercise both the agreeing and disagreeing branches, and partial credit.
    scores = [ref_question_accuracy(p, h) for p, h in questions]
    assert sum(len(set(h)) == 1 for _, h in questions) > 100
    assert len({round(s, 6) for s in scores}) >= 5
    # Overall and per-type accuracy: means of the per-question accuracies, in percent.
    types = [("yes/no", "number", "other")[i % 3] for i in range(len(questions))]
    out = ev.vqa_accuracy([p for p, _ in questions], [h for _, h in questions], types)
    assert out["accuracy"] == pytest.approx(100 * sum(scores) / len(scores), abs=1e-12)
    for t in ("yes/no", "number", "other"):
        sub = [s for s, u in zip(scores, types) if u == t]
        assert out[f"accuracy/{t}"] == pytest.approx(100 * sum(sub) / len(sub), abs=1e-12)


def test_vqa_accuracy_official_averaging():
    # 3 of 10 humans said "2": leave-one-out subsets give 2/3 (3 times) or 1 (7 times).
    assert ev.vqa_score("two", ten(("2", 3), ("3", 7))) == pytest.approx(0.9)
    assert ev.vqa_score("2", ten(("2", 3), ("3", 7)), average_subsets=False) == 1.0
    assert ev.vqa_score("2", ten(("2", 1), ("3", 9))) == pytest.approx(0.3)
    assert ev.vqa_score("4", ten(("2", 1), ("3", 9))) == 0.0
    assert ev.vqa_score("Yes", ["yes"] * 10) == 1.0
    out = ev.vqa_accuracy(["2", "red", "no"],
                          [ten(("2", 3), ("3", 7)), ["red"] * 10, ["yes"] * 10],
                          answer_types=["number", "other", "yes/no"])
    assert out["accuracy"] == pytest.approx(100 * 1.9 / 3)
    assert out["accuracy/number"] == pytest.approx(90.0) and out["accuracy/yes/no"] == 0.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="normalize"):
        ev.vqa_score("a", ["a"] * 10, normalize="loose")
    with pytest.raises(ValueError, match="at least 2"):
        ev.vqa_score("a", ["a"])
    assert ev.vqa_score("cat", ["cat"], average_subsets=False) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one"):
        ev.vqa_score("a", [])
    with pytest.raises(ValueError, match="answer types"):
        ev.vqa_accuracy(["a"], [["a"] * 10], answer_types=[])
