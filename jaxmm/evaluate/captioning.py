"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr through pycocoevalcap.

Reference: the COCO caption evaluation (``COCOEvalCap`` of tylin/coco-caption, as
packaged in ``pycocoevalcap`` 1.2): every caption is tokenised with the Stanford
PTB tokenizer (Java; lower-cased, punctuation tokens dropped), then each scorer
runs over the whole corpus against all references of each image: corpus BLEU-n
(``Bleu(4)``, "closest" reference length for the brevity penalty), METEOR 1.5,
ROUGE-L (LCS F-measure, beta 1.2, averaged over images) and CIDEr-D (document
frequencies from the given references; 0-10 scale). With ``tokenize=True`` the
numbers equal ``COCOEvalCap.evaluate()``'s. SPICE is not computed: pycocoevalcap's
SPICE downloads Stanford CoreNLP models at run time, which is impossible offline.
METEOR and the tokenizer need Java (``java`` on PATH; Java 17 works).
``tokenize=False`` is not the COCO protocol: texts are only lower-cased and split on
white space (punctuation stays).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

__all__ = ["caption_metrics", "repeated_ngram_rate", "score_captions"]

ALL_METRICS = ("bleu", "meteor", "rouge", "cider")


def caption_metrics(
    predictions: Mapping[int | str, str],
    references: Mapping[int | str, Sequence[str]],
    metrics: Sequence[str] = ALL_METRICS,
    tokenize: bool = True,
) -> dict[str, float]:
    """Corpus scores for ``predictions[image_id]`` against ``references[image_id]``.

    Args:
      predictions: one generated caption per image id.
      references: the reference captions of each image (same ids).
      metrics: a subset of ``("bleu", "meteor", "rouge", "cider")``.
      tokenize: PTB-tokenise both sides first (the standard protocol; needs Java).
        Without it, texts are only lower-cased and split on whitespace.

    Returns:
      ``{"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}`` (fractions, as
      pycocoevalcap reports them; CIDEr is on its usual 0-10 scale).
    """
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"Unknown caption metric(s) {sorted(unknown)}; choose from "
                         f"{ALL_METRICS}. (SPICE is unavailable offline.)")
    if set(predictions) != set(references):
        missing = set(references) - set(predictions)
        extra = set(predictions) - set(references)
        raise ValueError(f"predictions and references must cover the same ids "
                         f"(missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}).")
    if not predictions:
        raise ValueError("No captions to score.")
    for key, refs in references.items():
        if not refs:
            raise ValueError(f"Image {key!r} has no reference captions.")
    needs_java = tokenize or "meteor" in metrics
    if needs_java and shutil.which("java") is None:
        raise RuntimeError("Caption metrics need Java for the PTB tokenizer and METEOR; "
                           "install a JRE (e.g. apt-get install openjdk-17-jre-headless) or "
                           "pass tokenize=False and leave out 'meteor'.")
    keys = sorted(predictions, key=str)
    gts = {i: [{"caption": c} for c in references[k]] for i, k in enumerate(keys)}
    res = {i: [{"caption": predictions[k]}] for i, k in enumerate(keys)}
    if tokenize:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        # One Java call for both sides (keys tagged "g"/"r").
        both = PTBTokenizer().tokenize({**{("g", i): v for i, v in gts.items()},
                                        **{("r", i): v for i, v in res.items()}})
        gts = {i: both[("g", i)] for i in gts}
        res = {i: both[("r", i)] for i in res}
    else:
        gts = {i: [" ".join(c["caption"].lower().split()) for c in v] for i, v in gts.items()}
        res = {i: [" ".join(c["caption"].lower().split()) for c in v] for i, v in res.items()}
    out: dict[str, float] = {}
    if "bleu" in metrics:
        from pycocoevalcap.bleu.bleu import Bleu

        scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out.update({f"BLEU-{n + 1}": float(s) for n, s in enumerate(scores)})
    if "meteor" in metrics:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:  # stop the Java process now rather than at garbage collection
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
    if "rouge" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "cider" in metrics:
        from pycocoevalcap.cider.cider import Cider

        out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out


def score_captions(predictions: Mapping[int | str, str],
                   references: Mapping[int | str, Sequence[str]]) -> dict[str, float]:
    """:func:`caption_metrics` with the standard protocol when Java is installed.

    Without ``java`` on PATH (no PTB tokenizer, no METEOR) it scores BLEU-1..4,
    ROUGE-L and CIDEr on lower-cased whitespace tokens and logs a note, so a
    machine without Java still gets its results.
    """
    if shutil.which("java"):
        return caption_metrics(predictions, references)
    log.warning("java not found: caption metrics without PTB tokenisation and METEOR "
                "(install a JRE, e.g. openjdk-17-jre-headless, for the standard protocol)")
    return caption_metrics(predictions, references, metrics=("bleu", "rouge", "cider"),
                           tokenize=False)


def repeated_ngram_rate(captions: Sequence[str], n: int = 2) -> float:
    """Percentage of the word n-grams of ``captions`` that repeat an earlier n-gram of
    the same caption (lower-cased, split on white space; pooled over all captions):
    "on on on on" has three 2-grams, two of them repeats (66.7%). 0 when no caption
    has ``n`` words. The degenerate-repetition measure of neural text generation
    (Welleck et al., 2019, "rep-n", computed per caption)."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}.")
    total = repeats = 0
    for caption in captions:
        words = caption.lower().split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    return 100.0 * repeats / total if total else 0.0
