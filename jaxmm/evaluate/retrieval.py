"""Cross-modal retrieval recall@K with several captions per image.

``similarity[i, t]`` scores image ``i`` against text ``t``; ``image_ids``
names each image and ``text_image_ids`` the image each text describes (so one
image may have several captions, as in COCO/Flickr30k).

Reference: the standard image-text retrieval protocol on the Karpathy splits of
COCO and Flickr30k (VSE++, UNITER, ALBEF/BLIP ``itm_eval``):

* image -> text: an image is a hit at K if ANY of its captions is among the K
  best-scored texts (its rank is the best rank of its captions);
* text -> image: a text is a hit at K if its image is among the K best-scored
  images;
* ``R@K`` is the percentage of hits, ``mean_recall`` the mean of all the R@K of
  both directions (``r_mean`` in ALBEF/BLIP; ``rsum / 6`` for K = 1, 5, 10).

Ties favour the query: a rank counts the items scored strictly higher than the
best correct one, so a correct item tied with others is ranked first among them.
The reference scripts rank with ``argsort``, which orders tied items arbitrarily;
without ties the two agree exactly (scikit-learn's ``top_k_accuracy_score`` too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["retrieval_recall"]


def retrieval_recall(
    similarity: np.ndarray,
    image_ids: Sequence[int] | np.ndarray,
    text_image_ids: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K (percent) in both directions plus their mean (``rsum / (2 * len(ks))``).

    Args:
      similarity: ``(num_images, num_texts)`` scores.
      image_ids: ``(num_images,)`` unique ids.
      text_image_ids: ``(num_texts,)`` id of the image each text belongs to.
      ks: the cut-offs K.

    Returns:
      ``{"i2t_R@1": ..., "t2i_R@1": ..., ..., "mean_recall": ...}``.

    Ties favour the query (see the module docstring).
    """
    sim = np.asarray(similarity, np.float64)
    img = np.asarray(image_ids)
    txt = np.asarray(text_image_ids)
    if sim.ndim != 2 or sim.shape != (img.shape[0], txt.shape[0]):
        raise ValueError(f"similarity must be (num_images, num_texts) = ({img.shape[0]}, "
                         f"{txt.shape[0]}); got {sim.shape}.")
    if len(np.unique(img)) != len(img):
        raise ValueError("image_ids must be unique (one row per image).")
    missing = np.setdiff1d(txt, img)
    if missing.size:
        raise ValueError(f"texts refer to images not in image_ids: {missing[:5].tolist()}")
    match = img[:, None] == txt[None, :]  # (I, T)
    # image -> text: rank of the best matching caption among all texts.
    best_i2t = np.where(match, sim, -np.inf).max(axis=1)
    i2t_rank = (sim > best_i2t[:, None]).sum(axis=1)
    # text -> image: rank of the text's image among all images.
    correct_t2i = np.where(match, sim, -np.inf).max(axis=0)
    t2i_rank = (sim > correct_t2i[None, :]).sum(axis=0)
    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * float(np.mean(i2t_rank < k))
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * float(np.mean(t2i_rank < k))
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out
