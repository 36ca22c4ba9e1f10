"""The built-in dataset: truthful captions/answers, split disjointness, speech synthesis."""

import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_helpers import SCENES

from jaxmm.data import builtin, scenes, speech
from jaxmm.data.sources import find_prepared

NUM = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine".split())}
COLS = {"left": 0, "center": 1, "right": 2}
ROWS = {"top": 0, "middle": 1, "bottom": 2}


def _objects(ex):
    o = ex["objects"]
    return [dict(shape=scenes.SHAPES[s], color=list(scenes.COLORS)[c], size=scenes.SIZES[z],
                 row=int(r), col=int(k), cx=float(x), cy=float(y), radius=float(rad))
            for s, c, z, r, k, x, y, rad in zip(o["shape"], o["color"], o["size"], o["row"],
                                                 o["col"], o["cx"], o["cy"], o["radius"])]


def _find(objs, phrase):
    """Objects matching a phrase like 'large red circle' / 'red circle' / 'circle'."""
    words = phrase.split()
    out = []
    for o in objs:
        attrs = {o["size"], o["color"], o["shape"]}
        if all(w in attrs for w in words):
            out.append(o)
    return out


def _check_caption(text, objs):
    """Independent checker: every caption template's claim holds for ``objs``."""
    n = len(objs)
    if m := re.fullmatch(r"(?:there is |an image of |a picture showing )?(.*)", text):
        items = re.split(r", | and ", m.group(1))
        if all(re.fullmatch(r"an? (small|large) \w+ \w+", i) for i in items):
            got = sorted(tuple(i.split()[1:]) for i in items)
            assert got == sorted((o["size"], o["color"], o["shape"]) for o in objs), text
            return
    if (m := re.fullmatch(r"(\w+) shapes? (.*)", text)) and m.group(1) in NUM:
        assert NUM[m.group(1)] == n, text
        for part in re.split(r", | and ", m.group(2)):
            count, shape = part.split()
            assert sum(o["shape"] == shape.rstrip("s") for o in objs) == NUM[count], text
        return
    if m := re.fullmatch(r"(.*) shapes? on a gray background", text):
        assert set(re.split(r", | and ", m.group(1))) == {o["color"] for o in objs}, text
        return
    if re.fullmatch(r"(an? \w+ \w+ at the \w+ \w+(, | and )?)+", text):
        items = re.findall(r"an? (\w+) (\w+) at the (\w+) (\w+)", text)
        got = sorted((c, s, ROWS[r], COLS[k]) for c, s, r, k in items)
        assert got == sorted((o["color"], o["shape"], o["row"], o["col"]) for o in objs), text
        return
    if m := re.fullmatch(r"the (.+) is (to the left of|to the right of|above|below) the (.+)",
                         text):
        (a,), (b,) = _find(objs, m.group(1)), _find(objs, m.group(3))  # unambiguous
        rel = m.group(2)
        ok = {"to the left of": a["cx"] < b["cx"], "to the right of": a["cx"] > b["cx"],
              "above": a["cy"] < b["cy"], "below": a["cy"] > b["cy"]}[rel]
        assert ok, text
        return
    if m := re.fullmatch(r"the (largest shape|biggest object) is an? (.+)", text):
        biggest = max(objs, key=lambda o: o["radius"])
        assert _find([biggest], m.group(2)) == [biggest], text
        return
    raise AssertionError(f"caption {text!r} matches no template")


def _check_answer(question, answer, kind, objs):
    if m := re.fullmatch(r"how many (\w+?)s are there", question):
        what = m.group(1)
        want = len(objs) if what == "shape" else sum(o["shape"] == what for o in objs)
        assert answer == str(want)
    elif m := re.fullmatch(r"what color is the (.+)", question):
        (o,) = _find(objs, m.group(1))
        assert answer == o["color"]
    elif m := re.fullmatch(r"what shape is the (.+) object", question):
        (o,) = _find(objs, m.group(1))
        assert answer == o["shape"]
    elif m := re.fullmatch(r"which column is the (.+) in", question):
        (o,) = _find(objs, m.group(1))
        assert answer == ["left", "center", "right"][int(o["cx"] // (64 / 3))]
    elif m := re.fullmatch(r"is there an? (\w+) (\w+)", question):
        present = any(o["color"] == m.group(1) and o["shape"] == m.group(2) for o in objs)
        assert answer == ("yes" if present else "no")
    else:
        raise AssertionError(f"question {question!r} matches no template")
    assert answer in scenes.ANSWERS


@pytest.fixture(scope="module")
def examples(scenes_dir):
    builder = tfds.builder_from_directory(find_prepared(scenes_dir, SCENES))
    out = {}
    for split in ("train", "validation", "test"):
        source = builder.as_data_source(split=split)
        out[split] = [source[i] for i in range(len(source))]
    return out


def test_examples_are_truthful(examples):
    kinds = set()
    for ex in examples["train"] + examples["validation"]:
        objs = _objects(ex)
        assert 1 <= len(objs) <= 4 and sum(o["size"] == "large" for o in objs) == 1
        captions = [c.decode() for c in ex["captions"]]
        assert len(set(captions)) == 5
        for c in captions:
            _check_caption(c, objs)
        for q, a, t in zip(ex["questions"], ex["answers"], ex["question_types"]):
            _check_answer(q.decode(), a.decode(), t.decode(), objs)
            kinds.add(t.decode())
        large = next(o for o in objs if o["size"] == "large")
        assert scenes.SHAPES[ex["label"]] == large["shape"]
        # Rendering: each object's colour is at its centre (triangles: lower centre).
        img = ex["image"].astype(int)
        for o in objs:
            y = int(o["cy"] + (o["radius"] * 0.3 if o["shape"] == "triangle" else 0))
            pix = img[y, int(o["cx"])]
            assert np.abs(pix - scenes.COLORS[o["color"]]).max() <= 16, (o, pix)
        # The spoken caption is the first one, and the audio is its synthesis.
        assert ex["speech_text"] == ex["captions"][0]
        assert ex["speech"].dtype == np.int16 and ex["speech"].size > 8000
    assert kinds == {"count", "color", "shape", "position", "exists"}


def test_splits_share_no_scene(examples):
    signatures = {}
    for split, items in examples.items():
        sigs = []
        for ex in items:
            objs = _objects(ex)
            sig = tuple(sorted((o["shape"], o["color"], o["size"], o["row"], o["col"])
                               for o in objs))  # recomputed from the stored objects
            sigs.append(sig)
        assert len(set(sigs)) == len(sigs), f"{split} repeats a scene"
        signatures[split] = set(sigs)
    assert len(examples["train"]) == 48 and len(examples["test"]) == 16
    assert not signatures["train"] & signatures["validation"]
    assert not signatures["train"] & signatures["test"]
    assert not signatures["validation"] & signatures["test"]
    ids = [set(int(e["image_id"]) for e in v) for v in examples.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_plan_is_deterministic_and_disjoint_at_scale():
    config = builtin.make_config("tiny", name="x", train_size=600, validation_size=150,
                                 test_size=150, max_objects=2)
    plan = builtin.plan_splits(config)
    again = builtin.plan_splits(config)
    assert [i for i, _ in plan["train"]] == [i for i, _ in again["train"]]
    sigs = {k: {s.signature for _, s in v} for k, v in plan.items()}
    assert sum(len(v) for v in sigs.values()) == 900  # all distinct
    assert not (sigs["train"] & sigs["validation"]) and not (sigs["train"] & sigs["test"])
    assert not sigs["validation"] & sigs["test"]


def test_captions_and_answers_from_spec():
    scene = scenes.sample_scene(np.random.default_rng(7))
    objs = [dict(shape=o.shape, color=o.color, size=o.size, row=o.row, col=o.col, cx=o.cx,
                 cy=o.cy, radius=o.radius) for o in scene.objects]
    for seed in range(20):
        for c in scenes.make_captions(scene, seed):
            _check_caption(c, objs)
        for q, a, t in scenes.answer_questions(scene, seed, num=5):
            _check_answer(q, a, t, objs)


def _spectrum(wave):
    spec = np.abs(np.fft.rfft(wave, n=4096))
    return spec / np.linalg.norm(spec)


def test_speech_is_deterministic_and_distinguishable_per_word():
    a = speech.synthesize("red circle", seed=5)
    np.testing.assert_array_equal(a, speech.synthesize("red circle", seed=5))
    assert not np.array_equal(a, speech.synthesize("red circle", seed=6))  # jitter
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
    words = ["red", "green", "blue", "circle", "square", "triangle", "left", "two"]
    assert len({speech.word_voice(w) for w in words}) == len(words)
    # Nearest clean template by spectrum identifies each jittered word.
    templates = {w: _spectrum(speech.synthesize(w, jitter=0.0)) for w in words}
    correct = 0
    for seed in range(5):
        for w in words:
            s = _spectrum(speech.synthesize(w, seed=seed))
            best = max(templates, key=lambda t: float(templates[t] @ s))
            correct += best == w
    assert correct == 5 * len(words)
    # Duration grows with the number of words (word-level alignment is possible).
    assert len(speech.synthesize("red red red", seed=1)) > 2.5 * len(
        speech.synthesize("red", seed=1)) - 2000


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_object_box_is_the_box_of_the_drawn_pixels(shape):
    """Each shape alone on the background: the pixels that differ from it span the box
    object_box gives, to the pixel (rasterisation rounds the edges)."""
    obj = scenes.Obj(shape=shape, color="blue", size="large", row=1, col=1, cx=31.3, cy=30.6,
                     radius=8.7)
    image = scenes.render(scenes.Scene((obj,), 64, (200, 200, 200)), noise_seed=0)
    ys, xs = np.nonzero(np.abs(image.astype(int) - 200).max(-1) > 40)
    x0, y0, x1, y1 = scenes.object_box(obj)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1.5
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1.5
