"""Generated image-caption data for multimodal tests: coloured shapes on noise.

``render(color, shape, rng, size)`` draws one shape at a random position and
scale; ``make_dataset(n, rng)`` returns images, captions (``"a red circle"``),
class ids and VQA question/answer pairs; ``WordTokenizer`` is a tiny word-level
tokenizer with pad/bos/eos ids, enough for the captions and questions.
"""

from __future__ import annotations

import numpy as np

COLORS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.1),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.9, 0.9, 0.1),
}
SHAPES = ("circle", "square", "triangle")
CLASSES = [(c, s) for c in COLORS for s in SHAPES]
CAPTIONS = [f"a {c} {s}" for c, s in CLASSES]
QUESTIONS = ("what color is the shape", "what shape is it")


def render(color: str, shape: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """``(size, size, 3)`` float32 image in ``[-1, 1]``: a shape on grey noise."""
    img = np.full((size, size, 3), 0.5, np.float32)
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    radius = rng.uniform(0.33, 0.4) * size
    cy, cx = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    yy, xx = np.mgrid[:size, :size] + 0.5
    if shape == "circle":
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    elif shape == "square":
        inside = (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
    else:  # upward triangle
        top, bottom = cy - radius, cy + radius
        half = (yy - top) / (2 * radius) * radius
        inside = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    img[inside] = COLORS[color]
    return (img * 2.0 - 1.0).clip(-1, 1)


def make_dataset(n: int, rng: np.random.Generator, size: int = 32) -> dict[str, np.ndarray]:
    """``n`` examples: ``image`` (n, size, size, 3), ``label`` (class index into
    :data:`CLASSES`), ``caption`` strings, and a VQA ``question``/``answer`` pair
    (color or shape question, answer word)."""
    labels = rng.integers(0, len(CLASSES), n)
    images = np.stack([render(*CLASSES[k], rng, size) for k in labels])
    qkind = rng.integers(0, 2, n)
    questions = [QUESTIONS[q] for q in qkind]
    answers = [CLASSES[k][q] for k, q in zip(labels, qkind)]
    return dict(image=images, label=labels.astype(np.int32),
                caption=[CAPTIONS[k] for k in labels], question=questions, answer=answers)


class WordTokenizer:
    """Word-level tokenizer over the caption/question/answer words.

    Ids: pad 0, then the words, then bos and eos as the two largest ids (the
    OpenAI CLIP layout, so EOS pooling by first-EOS and by argmax agree).
    """

    def __init__(self, vocab_size: int = 32):
        words = sorted({w for text in CAPTIONS + list(QUESTIONS) for w in text.split()})
        if len(words) + 3 > vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is too small for {len(words)} words.")
        self.vocab = {w: i + 1 for i, w in enumerate(words)}
        self.inverse = {i: w for w, i in self.vocab.items()}
        self.vocab_size = vocab_size
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, vocab_size - 2, vocab_size - 1

    def __call__(self, texts, max_length: int | None = None, add_bos: bool = True,
                 add_eos: bool = True) -> dict[str, np.ndarray]:
        seqs = [([self.bos_token_id] if add_bos else []) + [self.vocab[w] for w in t.split()]
                + ([self.eos_token_id] if add_eos else []) for t in texts]
        length = max_length or max(map(len, seqs))
        ids = np.zeros((len(seqs), length), np.int32)
        mask = np.zeros((len(seqs), length), np.int32)
        for i, s in enumerate(seqs):
            s = s[:length]
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids) -> str:
        return " ".join(self.inverse[int(i)] for i in ids if int(i) in self.inverse)
