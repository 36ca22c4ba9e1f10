"""Multimodal models learn, not just run: tiny models trained for a few hundred
jitted steps on generated coloured-shape images (tests/shapes_data.py).

* CLIP: image->caption retrieval recall@1 over the 12 captions (chance 1/12).
* Captioner (ViT -> GPT-2 with cross-attention): greedy captions of held-out
  images (jaxmm.generate) match exactly (chance 1/12 for a well-formed caption).
* VQA (early fusion, answer classifier): accuracy on held-out questions about
  colour (4 answers) or shape (3 answers) among 7 answers.
* Distillation: a student moves toward a frozen teacher (teacher unchanged, KL
  falls) with jaxmm.losses.distillation_loss.
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from jaxmm import generate
from jaxmm.losses import cross_entropy, distillation_loss, infonce_loss
from jaxmm.models import build
from tests.mm_params import random_params
from tests.shapes_data import CAPTIONS, CLASSES, COLORS, SHAPES, WordTokenizer, make_dataset, render

CHANCE_CAPTION = 1 / len(CAPTIONS)


def _train(loss_fn, params, steps, batches, lr):
    """Plain AdamW loop with a jitted step; returns (params, first loss, last loss)."""
    opt = optax.adamw(lr, weight_decay=0.01)
    state = opt.init(params)

    @jax.jit
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for i in range(steps):
        params, state, loss = step(params, state, batches(i))
        losses.append(float(loss))
    return params, np.mean(losses[:10]), np.mean(losses[-20:])


def _class_batch(i, n=12):
    """One image per class (a permutation), so no two captions in a batch repeat."""
    r = np.random.default_rng(1000 + i)
    labels = r.permutation(len(CLASSES))[:n]
    return np.stack([render(*CLASSES[k], r) for k in labels]), labels


@pytest.mark.slow
def test_clip_learns_image_caption_retrieval():
    tok = WordTokenizer(128)
    tiny = build("clip", "tiny").config  # one layer per tower
    model = build("clip", tiny.replace(text=tiny.text.replace(num_layers=1),
                                       vision=tiny.vision.replace(num_layers=1)))
    captions = tok(CAPTIONS)

    def batches(i):
        images, labels = _class_batch(i)
        return dict(image=images, input_ids=captions["input_ids"][labels],
                    attention_mask=captions["attention_mask"][labels])

    b0 = batches(0)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), b0["input_ids"], b0["image"],
                                          b0["attention_mask"])["params"])

    def loss_fn(p, b):
        out = model.apply({"params": p}, b["input_ids"], b["image"], b["attention_mask"])
        return infonce_loss(out.image_embeds, out.text_embeds, out.logit_scale)

    params, first, last = _train(loss_fn, params, 500, batches, 1e-3)
    test = make_dataset(120, np.random.default_rng(7))
    logits = jax.jit(lambda p: model.apply({"params": p}, captions["input_ids"], test["image"],
                                           captions["attention_mask"]).logits_per_image)(params)
    recall = float((np.asarray(logits).argmax(1) == test["label"]).mean())
    print(f"CLIP i2t recall@1 {recall:.3f} (chance {CHANCE_CAPTION:.3f}); loss {first:.2f} -> "
          f"{last:.2f}")
    assert last < 0.6 * first
    assert recall >= 0.5, f"recall@1 {recall} vs chance {CHANCE_CAPTION:.3f}"


def _shape_batch(i, n=24):
    r = np.random.default_rng(2000 + i)
    labels = r.integers(0, len(CLASSES), n)
    return np.stack([render(*CLASSES[k], r) for k in labels]), labels


@pytest.mark.slow
def test_captioner_learns_to_caption():
    tok = WordTokenizer(32)
    model = build("captioner", dict(
        encoder="vit", encoder_config=dict(size="tiny", d_model=32, num_layers=1, mlp_dim=64,
                                           norm_eps=1e-6),
        decoder=dict(vocab_size=32, max_position_embeddings=8, num_layers=1, d_model=32,
                     num_heads=4, mlp_dim=64, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)))
    # labels = caption + EOS; the model shifts them right behind the start (BOS) token.
    targets = tok(CAPTIONS, add_bos=False)["input_ids"]

    def batches(i):
        images, labels = _shape_batch(i)
        return dict(image=images, labels=targets[labels])

    b0 = batches(0)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), b0["image"],
                                          labels=b0["labels"])["params"])

    def loss_fn(p, b):
        return cross_entropy(model.apply({"params": p}, b["image"], labels=b["labels"]).logits,
                             b["labels"])

    params, first, last = _train(loss_fn, params, 300, batches, 2e-3)
    test = make_dataset(60, np.random.default_rng(8))
    out = generate(model, params, encoder_inputs={"image": test["image"]}, max_new_tokens=4)
    texts = [tok.decode(s) for s in np.asarray(out.sequences)]
    exact = float(np.mean([t == c for t, c in zip(texts, test["caption"])]))
    color = float(np.mean([t.split()[1:2] == c.split()[1:2] for t, c in zip(texts,
                                                                          test["caption"])]))
    print(f"captioner exact match {exact:.3f} (chance {CHANCE_CAPTION:.3f}), colour word "
          f"{color:.3f} (chance {1 / len(COLORS):.2f}); loss {first:.2f} -> {last:.2f}")
    assert last < 0.3 * first
    assert exact >= 0.6 and color >= 0.9


@pytest.mark.slow
def test_vqa_learns_to_answer():
    tok = WordTokenizer(32)
    answers = list(COLORS) + list(SHAPES)
    model = build("vqa", dict(
        fusion=dict(kind="early", modalities=("image", "text"), num_layers=1, d_model=32,
                    num_heads=4, mlp_dim=64, max_positions=32),
        encoders=dict(text=dict(vocab_size=32, width=32), image=dict(encoder="vit", config=dict(
            size="tiny", d_model=32, num_layers=1, mlp_dim=64, norm_eps=1e-6))),
        num_answers=len(answers)))

    def batches(i, n=64):
        d = make_dataset(n, np.random.default_rng(3000 + i))
        q = tok(d["question"], add_bos=False, add_eos=False)
        return dict(image=d["image"], input_ids=q["input_ids"],
                    attention_mask=q["attention_mask"],
                    label=np.array([answers.index(a) for a in d["answer"]], np.int32))

    b0 = batches(0)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), b0["image"], b0["input_ids"],
                                          b0["attention_mask"])["params"])

    def loss_fn(p, b):
        logits = model.apply({"params": p}, b["image"], b["input_ids"],
                             b["attention_mask"]).logits
        return cross_entropy(logits, b["label"])

    params, first, last = _train(loss_fn, params, 300, batches, 2e-3)
    test = batches(10_000, 96)
    logits = jax.jit(lambda p: model.apply({"params": p}, test["image"], test["input_ids"],
                                           test["attention_mask"]).logits)(params)
    pred = np.asarray(logits).argmax(1)
    acc = float((pred == test["label"]).mean())
    is_color = test["label"] < len(COLORS)
    type_ok = float(((pred < len(COLORS)) == is_color).mean())
    right = pred == test["label"]
    color, shape = float(right[is_color].mean()), float(right[~is_color].mean())
    # Chance: 1/7 blind; 0.29 knowing the question type (1/4 colour, 1/3 shape).
    print(f"VQA accuracy {acc:.3f} (chance 0.14; 0.29 knowing the question type): colour "
          f"{color:.3f} (chance 0.25), shape {shape:.3f} (chance 0.33), answer type right "
          f"{type_ok:.3f}; loss {first:.2f} -> {last:.2f}")
    assert type_ok >= 0.95 and color >= 0.9 and shape >= 0.5
    assert acc >= 0.75 and last < 0.3 * first


@pytest.mark.slow
def test_distillation_moves_student_toward_frozen_teacher():
    """Student (1 layer, width 32) distils a frozen, sharper teacher (2 layers, width
    64) on unlabeled images: the KL falls and top-1 agreement rises; the teacher
    gets exactly zero gradient and its params stay bit-identical."""

    teacher = build("vit_classifier", "tiny", num_labels=10)
    student = build("vit_classifier", "tiny", d_model=32, num_layers=1, mlp_dim=64,
                    num_labels=10)
    x0 = _shape_batch(0)[0]
    t_params = random_params(teacher, x0, std=0.3)  # peaked teacher distribution
    s_params = nn.unbox(jax.jit(student.init)(jax.random.key(1), x0)["params"])
    t_before = jax.tree.map(np.array, t_params)
    opt = optax.adamw(2e-3)
    state = opt.init(s_params)

    def loss_fn(s_p, t_p, x):
        t_logits = teacher.apply({"params": t_p}, x).logits
        s_logits = student.apply({"params": s_p}, x).logits
        return distillation_loss(s_logits, t_logits, temperature=2.0)

    @jax.jit
    def step(s_p, t_p, state, x):
        loss, (s_g, t_g) = jax.value_and_grad(loss_fn, argnums=(0, 1))(s_p, t_p, x)
        t_grad_norm = optax.tree.norm(t_g)
        updates, state = opt.update(s_g, state, s_p)
        return optax.apply_updates(s_p, updates), state, loss, t_grad_norm

    @jax.jit
    def evaluate(s_p, t_p, x):
        t = teacher.apply({"params": t_p}, x).logits
        s = student.apply({"params": s_p}, x).logits
        kl = distillation_loss(s, t, temperature=1.0)
        return kl, (s.argmax(-1) == t.argmax(-1)).mean()

    held_out = make_dataset(64, np.random.default_rng(9))["image"]
    kl0, agree0 = evaluate(s_params, t_params, held_out)
    for i in range(150):
        s_params, state, loss, t_grad_norm = step(s_params, t_params, state, _shape_batch(i)[0])
        assert float(t_grad_norm) == 0.0
    kl1, agree1 = evaluate(s_params, t_params, held_out)
    print(f"distillation KL {float(kl0):.3f} -> {float(kl1):.3f}, top-1 agreement "
          f"{float(agree0):.2f} -> {float(agree1):.2f}")
    assert float(kl1) < 0.5 * float(kl0)
    assert float(agree1) > float(agree0) + 0.2
    jax.tree.map(np.testing.assert_array_equal, t_before, jax.tree.map(np.array, t_params))
