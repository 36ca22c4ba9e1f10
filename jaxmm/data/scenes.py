"""Synthetic multimodal scenes: sampling, rendering, captions and questions.

A *scene* is a few coloured shapes placed in distinct cells of a 3x3 grid on a
plain background. Exactly one object is ``large`` (the others are ``small``);
the scene's class label is that object's shape. Everything here is a pure
function of the scene spec (and of an integer seed for phrasing), so the tests
can recompute every caption and answer from the stored metadata.

This module has no TensorFlow dependency; the tfds builder in
:mod:`jaxmm.data.builtin` calls it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "ANSWERS",
    "COLORS",
    "SHAPES",
    "SIZES",
    "Obj",
    "Scene",
    "BOX_EXTENTS",
    "answer_questions",
    "make_captions",
    "number_word",
    "object_box",
    "render",
    "sample_scene",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SIZES: tuple[str, ...] = ("small", "large")
COLUMNS: tuple[str, ...] = ("left", "center", "right")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Every answer a question can have (the VQA answer vocabulary; digits follow the
# official VQA normalisation, which maps number words to digits).
ANSWERS: tuple[str, ...] = (
    ("yes", "no") + tuple(str(i) for i in range(10)) + tuple(COLORS) + SHAPES + COLUMNS
)
# Radius of an object as a fraction of the cell size.
_RADIUS = {"small": 0.22, "large": 0.42}
# How far each shape, as :func:`render` draws it, reaches from its centre in units of its
# radius: (left and right, up, down). The exact box of an object (detection targets).
BOX_EXTENTS: dict[str, tuple[float, float, float]] = {
    "circle": (1.0, 1.0, 1.0),
    "square": (0.85, 0.85, 0.85),
    "triangle": (0.95, 1.0, 0.8),
    "diamond": (1.0, 1.0, 1.0),
}


def number_word(n: int) -> str:
    return _NUMBERS[n]


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article ("a red circle", "an orange square")."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


@dataclasses.dataclass(frozen=True)
class Obj:
    """One object. ``row``/``col`` index the 3x3 grid; ``cx``/``cy``/``radius`` are pixels."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    cx: float
    cy: float
    radius: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    image_size: int
    background: tuple[int, int, int]

    @property
    def signature(self) -> tuple:
        """What makes two scenes the same scene (jitter and background aside)."""
        return tuple(sorted((o.shape, o.color, o.size, o.row, o.col) for o in self.objects))

    @property
    def signature_hash(self) -> str:
        return hashlib.sha256(repr(self.signature).encode()).hexdigest()

    @property
    def label(self) -> int:
        """Class label: index in :data:`SHAPES` of the (single) large object's shape."""
        (large,) = [o for o in self.objects if o.size == "large"]
        return SHAPES.index(large.shape)


def sample_scene(
    rng: np.random.Generator, image_size: int = 64, min_objects: int = 1, max_objects: int = 4
) -> Scene:
    """Samples a scene: ``min_objects..max_objects`` objects in distinct grid cells."""
    if not 1 <= min_objects <= max_objects <= 9:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 9, got {min_objects}, "
                         f"{max_objects}")
    n = int(rng.integers(min_objects, max_objects + 1))
    cells = rng.choice(9, size=n, replace=False)
    large = int(rng.integers(n))
    cell = image_size / 3.0
    objects = []
    for i, c in enumerate(cells):
        row, col = divmod(int(c), 3)
        size = "large" if i == large else "small"
        radius = _RADIUS[size] * cell * float(rng.uniform(0.92, 1.0))
        slack = cell / 2 - radius - 1.0  # keep the object inside its cell
        cx = (col + 0.5) * cell + float(rng.uniform(-slack, slack)) * 0.8
        cy = (row + 0.5) * cell + float(rng.uniform(-slack, slack)) * 0.8
        objects.append(Obj(
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            color=list(COLORS)[int(rng.integers(len(COLORS)))],
            size=size, row=row, col=col, cx=cx, cy=cy, radius=radius,
        ))
    grey = int(rng.integers(190, 236))
    return Scene(tuple(objects), image_size, (grey, grey, grey))


def object_box(obj: Obj) -> tuple[float, float, float, float]:
    """The object's box ``(x0, y0, x1, y1)`` in pixels, as :func:`render` draws it."""
    side, up, down = BOX_EXTENTS[obj.shape]
    r = obj.radius
    return obj.cx - side * r, obj.cy - up * r, obj.cx + side * r, obj.cy + down * r


def render(scene: Scene, noise_seed: int = 0) -> np.ndarray:
    """Draws the scene: uint8 ``(image_size, image_size, 3)``."""
    s = scene.image_size
    img = Image.new("RGB", (s, s), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        r, x, y = o.radius, o.cx, o.cy
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif o.shape == "square":
            h = r * 0.85
            draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(x, y - r), (x - r * 0.95, y + r * 0.8), (x + r * 0.95, y + r * 0.8)],
                         fill=fill)
        elif o.shape == "diamond":
            draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
        else:  # pragma: no cover - SHAPES is closed
            raise ValueError(o.shape)
    arr = np.asarray(img, np.int16)
    noise = np.random.default_rng(noise_seed).normal(0.0, 3.0, arr.shape)
    return np.clip(arr + np.round(noise), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Language
# ---------------------------------------------------------------------------


def _unique(scene: Scene, obj: Obj) -> bool:
    return sum(o.name == obj.name for o in scene.objects) == 1


def _refer(scene: Scene, obj: Obj) -> str:
    """Shortest unambiguous phrase for ``obj`` ("red circle" or "large red circle")."""
    if _unique(scene, obj):
        return obj.name
    return f"{obj.size} {obj.name}"


def _referable(scene: Scene) -> list[Obj]:
    out = []
    for o in scene.objects:
        phrase = _refer(scene, o)
        if sum(_refer(scene, p) == phrase for p in scene.objects) == 1:
            out.append(o)
    return out


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _relation(a: Obj, b: Obj, rng: np.random.Generator) -> str | None:
    """A true spatial relation "a <rel> b" from grid cells, or None if none holds."""
    rels = []
    if a.col < b.col:
        rels.append("to the left of")
    if a.col > b.col:
        rels.append("to the right of")
    if a.row < b.row:
        rels.append("above")
    if a.row > b.row:
        rels.append("below")
    return rels[int(rng.integers(len(rels)))] if rels else None


def make_captions(scene: Scene, seed: int, num: int = 5) -> list[str]:
    """``num`` true captions in varied templates (lower case, no punctuation).

    The first caption is always the plain object list (``"a large red circle and
    a small blue square"``): it is the one the speech synthesiser speaks.
    """
    rng = np.random.default_rng(seed)
    objs = list(scene.objects)
    n = len(objs)
    order = [objs[i] for i in rng.permutation(n)]
    listing = _join([_a(f"{o.size} {o.name}") for o in order])
    candidates = []
    opener = ["there is", "an image of", "a picture showing"][int(rng.integers(3))]
    candidates.append(f"{opener} {listing}")
    counts = {s: sum(o.shape == s for o in objs) for s in SHAPES}
    parts = [f"{number_word(c)} {_plural(s, c)}" for s, c in counts.items() if c]
    candidates.append(f"{number_word(n)} {_plural('shape', n)} {_join(parts)}")
    colours = sorted({o.color for o in objs}, key=list(COLORS).index)
    candidates.append(f"{_join(colours)} {_plural('shape', n)} on a gray background")
    placed = _join([f"{_a(o.name)} at the {ROWS[o.row]} {COLUMNS[o.col]}" for o in order])
    candidates.append(placed)
    referable = _referable(scene)
    rel_caption = None
    if len(referable) >= 2:
        for _ in range(8):
            i, j = rng.choice(len(referable), size=2, replace=False)
            a, b = referable[int(i)], referable[int(j)]
            rel = _relation(a, b, rng)
            if rel:
                rel_caption = f"the {_refer(scene, a)} is {rel} the {_refer(scene, b)}"
                break
    if rel_caption is None:
        large = next(o for o in objs if o.size == "large")
        rel_caption = f"the largest shape is {_a(large.name)}"
    candidates.append(rel_caption)
    large = next(o for o in objs if o.size == "large")
    candidates.append(f"the biggest object is {_a(large.shape)}")
    picks = [candidates[int(i)] for i in rng.permutation(len(candidates))]
    out = [listing] + picks
    if num > len(out):
        raise ValueError(f"at most {len(out)} captions per scene, asked for {num}")
    return out[:num]


def answer_questions(scene: Scene, seed: int, num: int = 4) -> list[tuple[str, str, str]]:
    """``num`` (question, answer, type) triples; answers are in :data:`ANSWERS`.

    Types: ``count``, ``color``, ``shape``, ``position``, ``exists`` (yes/no).
    Questions about one object only name objects that the phrase identifies
    uniquely.
    """
    rng = np.random.default_rng(seed)
    referable = _referable(scene)
    out: list[tuple[str, str, str]] = []
    kinds = ["count", "color", "shape", "position", "exists"]
    order = [kinds[int(i)] for i in rng.permutation(len(kinds))]
    attempts = 0
    while len(out) < num:
        kind = order[(len(out) + attempts) % len(order)]
        attempts += 1
        qa = _one_question(scene, kind, referable, rng)
        if qa[0] not in [q for q, _, _ in out] or attempts > 20 * num:
            out.append(qa)
    return out


def _named_by(objs: list[Obj], attr: str, rng: np.random.Generator) -> tuple[Obj, str]:
    """An object that ``attr`` (plus its size if needed) identifies, and that phrase."""
    value = lambda o: getattr(o, attr)  # noqa: E731
    candidates = [o for o in objs
                  if sum(value(p) == value(o) and p.size == o.size for p in objs) == 1]
    candidates = candidates or [o for o in objs if o.size == "large"]
    o = candidates[int(rng.integers(len(candidates)))]
    unique = sum(value(p) == value(o) for p in objs) == 1
    return o, value(o) if unique else f"{o.size} {value(o)}"


def _one_question(scene: Scene, kind: str, referable: list[Obj],
                  rng: np.random.Generator) -> tuple[str, str, str]:
    # ``referable`` is never empty: the single large object is always nameable.
    objs = list(scene.objects)
    if kind == "count":
        if rng.random() < 0.5:
            return ("how many shapes are there", str(len(objs)), kind)
        s = SHAPES[int(rng.integers(len(SHAPES)))]
        c = sum(o.shape == s for o in objs)
        return (f"how many {s}s are there", str(c), kind)
    elif kind == "color":  # the colour of an object named by its shape (+ size)
        o, phrase = _named_by(objs, "shape", rng)
        return (f"what color is the {phrase}", o.color, kind)
    elif kind == "shape":  # the shape of an object named by its colour (+ size)
        o, phrase = _named_by(objs, "color", rng)
        return (f"what shape is the {phrase} object", o.shape, kind)
    elif kind == "position":
        o = referable[int(rng.integers(len(referable)))]
        return (f"which column is the {_refer(scene, o)} in", COLUMNS[o.col], kind)
    else:
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if rng.random() < 0.5:  # bias towards objects that exist, for balanced answers
            o = objs[int(rng.integers(len(objs)))]
            color, shape = o.color, o.shape
        present = any(o.color == color and o.shape == shape for o in objs)
        return (f"is there {_a(color + ' ' + shape)}", "yes" if present else "no", kind)
