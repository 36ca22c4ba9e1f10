"""Attention visualisation and training curves (matplotlib, headless).

* :func:`attention_to_grid` turns a query's attention over image patch tokens
  into a ``(h, w)`` map; :func:`upsample_map` and :func:`overlay` put it on the
  image.
* :func:`attention_rollout` combines self-attention over layers (Abnar &
  Zuidema, 2020) to show what a ViT's [CLS] token draws on.
* :func:`cross_attention_maps` re-runs a captioner on generated tokens and
  returns each token's cross-attention over the image patch grid;
  :func:`save_attention_figure` draws an image with one heat map per token.
* :func:`read_metrics` / :func:`plot_training_curves` read the trainer's JSON-lines
  metrics and plot them.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "attention_rollout",
    "attention_to_grid",
    "cross_attention_maps",
    "overlay",
    "plot_training_curves",
    "read_metrics",
    "save_attention_figure",
    "save_caption_comparison",
    "save_sample_grid",
    "upsample_map",
]


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("jaxmm.viz needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def attention_to_grid(
    weights: np.ndarray, grid: tuple[int, int], *, num_prefix_tokens: int = 0,
    heads: str = "mean",
) -> np.ndarray:
    """One query's attention over patch tokens as a ``grid`` map.

    Args:
      weights: ``(H, S)`` per-head or ``(S,)`` weights over ``S`` key tokens, of
        which the first ``num_prefix_tokens`` (e.g. [CLS]) are not patches.
      grid: ``(h, w)`` patch grid, ``h * w == S - num_prefix_tokens``.
      heads: ``"mean"`` or ``"max"`` over heads.
    Returns:
      ``(h, w)`` map normalised to sum to 1 over patches.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim == 2:
        w = w.mean(0) if heads == "mean" else w.max(0)
    elif w.ndim != 1:
        raise ValueError(f"weights must be (heads, keys) or (keys,); got shape {w.shape}.")
    patches = w[num_prefix_tokens:]
    h, gw = grid
    if patches.size != h * gw:
        raise ValueError(
            f"{patches.size} patch weights do not fill a {h}x{gw} grid; check grid and "
            "num_prefix_tokens."
        )
    total = patches.sum()
    return (patches / total if total > 0 else patches).reshape(h, gw)


def cross_attention_maps(
    model: Any, params: Any, image: np.ndarray, sequences: np.ndarray, *,
    layer: int = -1, num_prefix_tokens: int | None = None,
) -> np.ndarray:
    """Per-token cross-attention maps over the image patch grid.

    Re-runs the decoder of ``model`` (an
    :class:`~jaxmm.models.captioner.ImageCaptioner`) on ``sequences``
    ``(B, T)`` (e.g. ``generate``'s output, starting with the decoder start
    token) for ``image`` ``(B, H, W, C)`` and returns ``(B, T - 1, gh, gw)``:
    for each generated token, the given layer's cross-attention (mean over
    heads) of the step that produced it, over the encoder's patch tokens
    (the first ``num_prefix_tokens``, default 1 for a [CLS] token, are
    dropped), normalised to sum to 1. Draw them with :func:`save_attention_figure`.
    """
    import jax
    import jax.numpy as jnp

    sequences = np.asarray(sequences)
    run = jax.jit(lambda p, x, ids: model.apply({"params": p}, x, ids, output_attentions=True
                                                ).cross_attentions[layer])
    weights = np.asarray(run(params, jnp.asarray(image), jnp.asarray(sequences[:, :-1])))
    s = weights.shape[-1]
    prefix = (1 if getattr(model.config.encoder_config, "class_token", True) else 0) \
        if num_prefix_tokens is None else num_prefix_tokens
    side = int(round((s - prefix) ** 0.5))
    if side * side != s - prefix:
        raise ValueError(f"{s - prefix} encoder patch tokens do not form a square grid; pass "
                         "num_prefix_tokens.")
    return np.stack([
        np.stack([attention_to_grid(weights[b, :, t], (side, side),
                                    num_prefix_tokens=prefix) for t in range(weights.shape[2])])
        for b in range(weights.shape[0])])


def upsample_map(attn: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a ``(h, w)`` map to ``size = (H, W)``, scaled to [0, 1]."""
    from PIL import Image

    a = np.asarray(attn, np.float32)
    up = np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.BILINEAR), np.float32)
    return (up - up.min()) / max(float(up.max() - up.min()), 1e-12)


def overlay(image: np.ndarray, attn: np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """Blends a ``(H, W)`` map in [0, 1] (jet-like colours) onto an RGB image in [0, 1]."""
    plt = _pyplot()
    img = np.asarray(image, np.float32)
    if img.max() > 1.0 or img.min() < 0.0:
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
    heat = plt.get_cmap("jet")(np.asarray(attn, np.float32))[..., :3]
    return np.clip((1 - alpha) * img[..., :3] + alpha * heat, 0.0, 1.0)


def attention_rollout(attentions: Sequence[np.ndarray], *, residual: bool = True) -> np.ndarray:
    """Attention rollout over layers.

    Args:
      attentions: per layer ``(B, H, T, T)`` self-attention weights.
      residual: add the identity for the residual connection (``0.5 A + 0.5 I``).
    Returns:
      ``(B, T, T)``: how much each output token draws on each input token.
    """
    result = None
    for layer in attentions:
        a = np.asarray(layer, np.float64).mean(1)  # (B, T, T)
        if residual:
            a = 0.5 * a + 0.5 * np.eye(a.shape[-1])[None]
            a = a / a.sum(-1, keepdims=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("attention_rollout needs at least one layer of attentions.")
    return result


def _save(plt, fig, axes, path: str, title: str | None) -> str:
    """Hides ``axes``' frames, adds the title, writes ``path`` (folders created) and
    closes the figure."""
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_attention_figure(
    path: str, image: np.ndarray, tokens: Sequence[str], maps: Sequence[np.ndarray],
    *, title: str | None = None,
) -> str:
    """Image plus one overlay per token (``maps[i]`` is an ``(h, w)`` map)."""
    plt = _pyplot()
    n = len(tokens)
    if n != len(maps):
        raise ValueError(f"{n} tokens but {len(maps)} attention maps.")
    fig, axes = plt.subplots(1, n + 1, figsize=(2.0 * (n + 1), 2.3))
    axes = np.atleast_1d(axes)
    axes[0].imshow(np.clip(image, 0, 1))
    axes[0].set_title("image", fontsize=8)
    for ax, tok, m in zip(axes[1:], tokens, maps):
        ax.imshow(overlay(image, upsample_map(m, image.shape[:2])))
        ax.set_title(tok, fontsize=8)
    return _save(plt, fig, axes, path, title)


def save_caption_comparison(
    path: str, image: np.ndarray, captions: Mapping[str, str],
    references: Sequence[str] = (), *, title: str | None = None,
) -> str:
    """One image beside its generated caption under each decoding (``{name: caption}``,
    in order) and, optionally, its reference captions."""
    plt = _pyplot()
    if not captions:
        raise ValueError("No captions to compare: pass {decoding name: caption}.")
    lines = [f"{name}: {textwrap.fill(c, 60, subsequent_indent='    ')}"
             for name, c in captions.items()]
    if references:
        lines += ["", "references:"] + [textwrap.fill(f"- {r}", 60, subsequent_indent="  ")
                                        for r in references]
    text = "\n".join(lines)
    fig, (ax_img, ax_txt) = plt.subplots(
        1, 2, figsize=(9.0, max(2.6, 0.22 * text.count("\n") + 1.0)),
        gridspec_kw={"width_ratios": [1, 2.6]})
    ax_img.imshow(np.clip(image, 0, 1))
    ax_txt.text(0.0, 1.0, text, va="top", ha="left", fontsize=8, family="monospace",
                transform=ax_txt.transAxes)
    return _save(plt, fig, (ax_img, ax_txt), path, title)


def save_sample_grid(
    path: str, images: Sequence[np.ndarray], texts: Sequence[str],
    *, attention: Sequence[np.ndarray | None] | None = None, columns: int = 4,
    boxes: Sequence[Sequence[tuple[Sequence[float], str]]] | None = None,
) -> str:
    """A grid of images with text under each; with ``attention``, a second row of
    overlays per sample (``(h, w)`` maps); with ``boxes``, each image's ``(box, label)``
    pairs drawn on it (boxes normalised ``(cx, cy, w, h)`` in [0, 1], as DETR predicts)."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    n = len(images)
    if len(texts) != n:
        raise ValueError(f"{n} images but {len(texts)} texts.")
    if boxes is not None and len(boxes) != n:
        raise ValueError(f"{n} images but {len(boxes)} lists of boxes.")
    rows_per = 2 if attention is not None else 1
    cols = min(columns, n)
    groups = -(-n // cols)
    fig, axes = plt.subplots(groups * rows_per, cols,
                             figsize=(3.4 * cols, 4.0 * groups * rows_per), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, text) in enumerate(zip(images, texts)):
        r, c = divmod(i, cols)
        ax = axes[r * rows_per, c]
        ax.imshow(np.clip(img, 0, 1))
        h, w = np.shape(img)[:2]
        for (cx, cy, bw, bh), label in (boxes[i] if boxes is not None else ()):
            ax.add_patch(Rectangle(((cx - bw / 2) * w - 0.5, (cy - bh / 2) * h - 0.5),
                                   bw * w, bh * h, fill=False, edgecolor="yellow",
                                   linewidth=1.2))
            ax.text((cx - bw / 2) * w - 0.5, (cy - bh / 2) * h - 1.0, label, fontsize=5,
                    color="black", backgroundcolor="yellow", va="bottom")
        wrapped = "\n".join(textwrap.fill(line, 44) for line in str(text).split("\n"))
        ax.set_title(wrapped, fontsize=7)
        if attention is not None and attention[i] is not None:
            ax2 = axes[r * rows_per + 1, c]
            ax2.imshow(overlay(img, upsample_map(attention[i], img.shape[:2])))
            ax2.set_title("cross-attention", fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Reads a JSON-lines metrics file (one object per line; bad lines are skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(rec, dict):
                records.append(rec)
    return records


def plot_training_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str,
    *, metrics: Sequence[str] | None = None, step_key: str = "step",
) -> str:
    """One subplot per metric, one line per run.

    Args:
      runs: run name -> records (dicts with ``step_key`` and metric values),
        e.g. from :func:`read_metrics`.
      metrics: metric names to plot (default: every numeric key but the step).
    """
    plt = _pyplot()
    names = list(metrics or [])
    if not names:
        seen: dict[str, None] = {}
        for recs in runs.values():
            for r in recs:
                for k, v in r.items():
                    if k != step_key and isinstance(v, int | float) and not isinstance(v, bool):
                        seen.setdefault(k)
        names = list(seen)
    if not names:
        raise ValueError("No numeric metrics to plot.")
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for run, recs in runs.items():
            pts = [(r[step_key], r[name]) for r in recs if name in r and step_key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=run, marker="." if len(pts) < 20 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(step_key, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
