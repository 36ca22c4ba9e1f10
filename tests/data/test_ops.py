"""Preprocessing ops against NumPy/PIL/SciPy references."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from scipy.signal import resample_poly

from jaxmm.config import ConfigError
from jaxmm.data import preprocess
from jaxmm.data.randaugment import apply_transform, rand_augment

SEED = tf.constant([1, 2], tf.int64)


def run(spec, tokenizer=None, seed=SEED, **example):
    op = preprocess.build(spec, tokenizer=tokenizer)
    out = op({k: tf.convert_to_tensor(v) for k, v in example.items()}, seed)
    return {k: v.numpy() for k, v in out.items()}


def test_parse_spec_forms():
    assert preprocess.parse("flip_lr|resize(8, key='x')|keep('a', 'b')") == [
        ("flip_lr", (), {}), ("resize", (8,), {"key": "x"}), ("keep", ("a", "b"), {})]
    assert preprocess.parse([{"op": "resize", "size": 8}, "flip_lr"]) == [
        ("resize", (), {"size": 8}), ("flip_lr", (), {})]
    with pytest.raises(ConfigError, match="not a literal"):
        preprocess.parse("resize(size)")
    with pytest.raises(ConfigError, match="no 'op' key"):
        preprocess.parse([{"size": 3}])
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        preprocess.build("tokenize(8)")
    with pytest.raises(ConfigError, match="needs key 'image'.*'text'"):
        run("flip_lr", text="x")


def test_image_geometry_ops(rng):
    img = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    out = run("central_crop((4, 6))", image=img)["image"]
    np.testing.assert_array_equal(out, img[3:7, 4:10])
    crop = run("random_crop(5)", image=img)["image"]
    windows = [img[i:i + 5, j:j + 5] for i in range(6) for j in range(10)]
    assert any(np.array_equal(crop, w) for w in windows)
    flips = {run("flip_lr", image=img, seed=tf.constant([s, 0]))["image"].tobytes()
             for s in range(8)}
    assert flips == {img.tobytes(), img[:, ::-1].tobytes()}
    small = run("resize_small(5)", image=img)["image"]
    assert small.shape == (5, 7, 3) and small.dtype == np.uint8
    resized = run("resize((7, 7), method='nearest', antialias=False)", image=img)["image"]
    ref = tf.image.resize(img, (7, 7), method="nearest").numpy()
    np.testing.assert_array_equal(resized, ref)
    # Already the target size: returned as is, which is what tf.image.resize computes too.
    h, w = img.shape[:2]
    same = run(f"resize(({h}, {w}))", image=img)["image"]
    ref = tf.cast(tf.round(tf.image.resize(img, (h, w), antialias=True)), tf.uint8).numpy()
    np.testing.assert_array_equal(same, ref)
    inc = run("inception_crop(6)", image=img)["image"]
    assert inc.shape == (6, 6, 3) and inc.dtype == np.uint8


def test_value_range_and_normalize(rng):
    img = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    np.testing.assert_allclose(run("value_range(-1, 1)", image=img)["image"],
                               img / 127.5 - 1.0, atol=1e-6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(run("normalize('imagenet')", image=img)["image"],
                               (img / 255.0 - mean) / std, atol=1e-5)


def test_decode_and_frames(rng, tmp_path):
    img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    data = (tmp_path / "x.png").read_bytes()
    np.testing.assert_array_equal(run("decode", image=data)["image"], img)
    video = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 1), np.uint8)
    out = run("sample_frames(3, stride=2, random=False)", video=video)["video"]
    np.testing.assert_array_equal(out[:, 0, 0, 0], [2, 4, 6])
    rand = run("sample_frames(4, stride=3)", video=video)["video"][:, 0, 0, 0]
    assert np.all(np.diff(rand) == 3) and 0 <= rand[0] <= 1
    looped = run("sample_frames(4, random=False)", video=video[:2])["video"][:, 0, 0, 0]
    np.testing.assert_array_equal(looped, [0, 1, 0, 1])


@pytest.mark.parametrize("name,pil", [
    ("solarize", lambda im, m: ImageOps.solarize(im, 256 - int(m / 10 * 256))),
    ("posterize", lambda im, m: ImageOps.posterize(im, 8 - round(m / 10 * 4))),
    ("autocontrast", lambda im, m: ImageOps.autocontrast(im)),
    ("equalize", lambda im, m: ImageOps.equalize(im)),
])
def test_randaugment_transforms_match_pil(rng, name, pil):
    img = rng.integers(30, 200, (16, 16, 3), dtype=np.uint8)
    got = apply_transform(tf.constant(img), name, 5.0).numpy()
    want = np.asarray(pil(Image.fromarray(img), 5.0))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_randaugment_deterministic_and_valid(rng):
    img = tf.constant(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    a = rand_augment(img, tf.constant([3, 4]), 3, 9).numpy()
    b = rand_augment(img, tf.constant([3, 4]), 3, 9).numpy()
    np.testing.assert_array_equal(a, b)
    outs = {rand_augment(img, tf.constant([s, 4]), 2, 9).numpy().tobytes() for s in range(6)}
    assert len(outs) > 3 and a.dtype == np.uint8 and a.shape == (12, 12, 3)
    wide = rng.integers(0, 256, (6, 20, 3), dtype=np.uint8)
    shifted = apply_transform(tf.constant(wide), "translate_x", 10 / 3, 1.0).numpy()
    # 0.45 * width * magnitude / 10 = 3 pixels to the right, constant fill 128.
    assert np.abs(shifted[:, 3:].astype(int) - wide[:, :-3]).max() <= 1
    assert (np.abs(shifted[:, :3].astype(int) - 128) <= 1).all()


def test_tokenize_matches_tokenizer(tokenizer):
    out = run("tokenize(8, key='t')|lm_labels", tokenizer, t="a red circle")
    ref = tokenizer.encode(["a red circle"], max_length=8)
    np.testing.assert_array_equal(out["input_ids"], ref["input_ids"][0])
    np.testing.assert_array_equal(out["attention_mask"], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out["labels"][5:], [-100] * 3)
    np.testing.assert_array_equal(out["labels"][:5], ref["input_ids"][0][:5])
    many = run("tokenize(6, key='t', prefix='q_')", tokenizer, t=np.array(["red", "a b c d e f"]))
    assert many["q_input_ids"].shape == (2, 6) and many["q_attention_mask"][1].all()
    pair = run("tokenize(10, key='a', pair_key='b')", tokenizer, a="red", b="blue circle")
    np.testing.assert_array_equal(pair["token_type_ids"][:6], [0, 0, 0, 1, 1, 1])
    dec = run("tokenize(6, key='t')|decoder_targets(start_id=2, pad_id=0)", tokenizer,
              t="red circle")
    ids = tokenizer.encode(["red circle"], max_length=6)["input_ids"][0]
    np.testing.assert_array_equal(dec["decoder_input_ids"], [2, *ids[:4], 0][:6])
    np.testing.assert_array_equal(dec["labels"], [*ids[:4], -100, -100])
    np.testing.assert_array_equal(dec["decoder_attention_mask"], [1, 1, 1, 1, 1, 0])
    assert "input_ids" not in dec


def test_choose_select_lookup_bookkeeping():
    qs, ans = np.array(["q0", "q1", "q2"]), np.array(["a0", "a1", "a2"])
    picks = set()
    for s in range(10):
        out = run("choose(('q', 'a'), ('question', 'answer'))", q=qs, a=ans,
                  seed=tf.constant([s, 9]))
        assert out["question"][1:] == out["answer"][1:]  # same index for both
        picks.add(out["question"])
    assert len(picks) == 3
    assert run("select('q', 2)", q=qs)["q"] == b"q2"
    out = run("lookup('a', ['a2', 'a0'], 'label')", a=ans)
    np.testing.assert_array_equal(out["label"], [1, -1, 0])
    out = run("rename(x='a')|copy('x', 'y')|cast('n', 'float32')|drop('q')", a=ans, q=qs, n=3)
    assert sorted(out) == ["n", "x", "y"] and out["n"].dtype == np.float32
    out = run("pad_to('q', 5, mask_key='m')|pad_to('v', 2)", q=qs, v=np.arange(4))
    np.testing.assert_array_equal(out["q"], [b"q0", b"q1", b"q2", b"", b""])
    np.testing.assert_array_equal(out["m"], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["v"], [0, 1])
    assert run("lowercase('t')", t="ÀB c")["t"].decode() == "àb c"


def test_audio_ops(rng):
    pcm = rng.integers(-32768, 32767, 1000).astype(np.int16)
    wave = run("audio_to_float", audio=pcm)["audio"]
    np.testing.assert_allclose(wave, pcm / 32768.0)
    res = run("resample(8000, 16000)", audio=wave)["audio"]
    np.testing.assert_allclose(res, resample_poly(wave, 2, 1), atol=1e-5)
    out = run("crop_or_pad(1500, mask_key='m')", audio=wave)
    np.testing.assert_array_equal(out["audio"][:1000], wave)
    assert out["m"].sum() == 1000 and not out["audio"][1000:].any()
    crop = run("crop_or_pad(100)", audio=wave)["audio"]
    start = int(np.argmin([np.abs(wave[i:i + 100] - crop).max() for i in range(901)]))
    np.testing.assert_array_equal(crop, wave[start:start + 100])


def test_decode_audio_wav(rng, tmp_path):
    import soundfile as sf

    stereo = rng.uniform(-0.5, 0.5, (400, 2)).astype(np.float32)
    sf.write(tmp_path / "a.wav", stereo, 8000, subtype="PCM_16")
    out = run("decode_audio(rate_key='rate')|resample(8000, 16000)",
              audio=(tmp_path / "a.wav").read_bytes())
    mono = np.round(stereo * 32767) / 32768
    ref = resample_poly(mono.mean(axis=1), 2, 1)
    assert out["rate"] == 8000 and out["audio"].shape == (800,)
    np.testing.assert_allclose(out["audio"], ref, atol=2e-4)


def test_log_mel_is_a_thin_op_over_a_named_function(rng):
    librosa = pytest.importorskip("librosa")

    def mel(x, sample_rate):
        m = librosa.feature.melspectrogram(y=x, sr=sample_rate, n_fft=400, hop_length=160,
                                           n_mels=16)
        return np.log10(np.maximum(m, 1e-10)).astype(np.float32)

    wave = rng.normal(0, 0.1, 4000).astype(np.float32)
    out = run([{"op": "log_mel", "fn": mel}], audio=wave)["input_features"]
    np.testing.assert_allclose(out, mel(wave, 16000), rtol=1e-6)
    with pytest.raises(ConfigError, match="cannot import 'nope.mod:f'"):
        preprocess.build("log_mel(fn='nope.mod:f')")


def test_log_mel_default_is_the_project_front_end(rng):
    from jaxmm.audio_features import whisper_log_mel

    wave = rng.normal(0, 0.1, 8000).astype(np.float32)
    out = run("log_mel(chunk_seconds=1.0)", audio=wave)["input_features"]
    ref = np.asarray(whisper_log_mel(wave, sample_rate=16000, chunk_seconds=1.0))
    assert out.shape == (80, 100)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_mlm_mask_op_is_jaxmm_losses_mlm_mask(tokenizer):
    import jax

    from jaxmm.losses import mlm_mask

    text = " ".join(["red circle blue square"] * 20)
    out = run("tokenize(64, key='t')|mlm_mask(0.3)", tokenizer, t=text)
    again = run("tokenize(64, key='t')|mlm_mask(0.3)", tokenizer, t=text)
    np.testing.assert_array_equal(out["input_ids"], again["input_ids"])
    enc = tokenizer.encode([text], max_length=64)
    ids, mask = enc["input_ids"][0], enc["attention_mask"][0]
    selected = out["labels"] != -100
    np.testing.assert_array_equal(out["labels"][selected], ids[selected])
    assert not selected[0] and not selected[ids == tokenizer.sep_token_id].any()
    assert 5 <= selected.sum() <= 35
    # Same numbers as calling jaxmm.losses.mlm_mask with the op's seed.
    op_seed = tf.random.experimental.stateless_fold_in(SEED, 1).numpy().astype(np.uint32)
    key = jax.random.wrap_key_data(op_seed, impl="threefry2x32")
    ref_ids, ref_labels = mlm_mask(
        key, ids, mask_token_id=tokenizer.mask_token_id, vocab_size=tokenizer.vocab_size,
        special_ids=[tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id],
        attention_mask=mask, mlm_probability=0.3)
    np.testing.assert_array_equal(out["input_ids"], ref_ids)
    np.testing.assert_array_equal(out["labels"], ref_labels)


def test_swap_words_makes_a_false_caption_by_one_rotation_per_example():
    shapes = ("circle", "square", "triangle", "diamond")
    spec = f"swap_words({shapes!r})"
    text = "two circles, a red square and a blue diamond"
    foils = {run(spec, seed=tf.constant([s, 3], tf.int64), text=text)["foil_text"].decode()
             for s in range(40)}
    # Each foil is one of the three non-identity rotations, applied to every shape word.
    rotations = set()
    for r in (1, 2, 3):
        to = {w: shapes[(i + r) % 4] for i, w in enumerate(shapes)}
        rotations.add(f"two {to['circle']}s, a red {to['square']} and a blue {to['diamond']}")
    assert foils == rotations
    # Whole words only; texts without any of them come back unchanged; the text is kept.
    out = run(spec, text="circlets and squares on a gray background")
    assert out["text"].decode() == "circlets and squares on a gray background"
    assert out["foil_text"].decode().startswith("circlets and ") and "squares" not in out[
        "foil_text"].decode()
    plain = "red shapes on a gray background"
    assert run(spec, text=plain)["foil_text"].decode() == plain
    assert run("swap_words(('a', 'b'), key='q', out_key='f')", q="a b")["f"].decode() == "b a"
    with pytest.raises(ConfigError, match="two or more different words"):
        preprocess.build("swap_words(('circle',))")
    with pytest.raises(ConfigError, match="letters/digits"):
        preprocess.build("swap_words(('a.b', 'c'))")


# -- box-aware image ops: boxes follow the pixels ---------------------------------------

BOX_RECTS = [(2, 1, 6, 5), (10, 3, 19, 9), (0, 0, 3, 2)]  # (x0, y0, x1, y1) pixels, in 20x10


def _painted(h=10, w=20, rects=BOX_RECTS):
    """An image with rectangle i painted in value 60 * (i + 1), its normalised cxcywh boxes
    (plus one all-zero padding row) and mask."""
    image = np.zeros((h, w, 1), np.uint8)
    boxes = np.zeros((len(rects) + 1, 4), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        image[y0:y1, x0:x1] = 60 * (i + 1)
        boxes[i] = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
    mask = np.array([1] * len(rects) + [0], np.int32)
    return image, boxes, mask


def _pixel_box(image, value, tol=0):
    """The (x0, y0, x1, y1) pixel extent of ``value`` in ``image`` (None if absent)."""
    ys, xs = np.nonzero(np.abs(image[..., 0].astype(int) - value) <= tol)
    return None if len(xs) == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def _to_pixels(box, h, w):
    cx, cy, bw, bh = box
    return np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])


@pytest.mark.parametrize("spec", ["flip_lr(boxes='boxes')",
                                  "random_crop((6, 12), boxes='boxes')",
                                  "central_crop((6, 8), boxes='boxes')"])
def test_box_aware_flips_and_crops_move_boxes_with_the_pixels(spec):
    image, boxes, mask = _painted()
    for s in range(12):
        out = run(spec, seed=tf.constant([s, 5], tf.int64), image=image, boxes=boxes,
                  box_mask=mask)
        h, w = out["image"].shape[:2]
        for i in range(len(BOX_RECTS)):
            pixels = _pixel_box(out["image"], 60 * (i + 1))
            if pixels is None:  # cropped away: zeroed and masked out
                assert out["box_mask"][i] == 0 and not out["boxes"][i].any(), (spec, s, i)
            else:
                assert out["box_mask"][i] == 1
                np.testing.assert_allclose(_to_pixels(out["boxes"][i], h, w), pixels,
                                           atol=1e-4, err_msg=f"{spec} seed {s} box {i}")
        assert not out["boxes"][-1].any() and out["box_mask"][-1] == 0  # padding stays
    # By hand: flipping the 20x10 image moves box 0 (x 2..6) to x 14..18: cx 0.8.
    flipped = [run("flip_lr(boxes='boxes')", seed=tf.constant([s, 5], tf.int64), image=image,
                   boxes=boxes)["boxes"][0] for s in range(12)]
    assert {round(float(b[0]), 4) for b in flipped} == {0.2, 0.8}


def test_central_crop_boxes_by_hand_and_inception_crop_follows_the_pixels():
    image, boxes, mask = _painted()
    # The central 6x8 window of 10x20 starts at (2, 6): box 1 (x 10..19, y 3..9) becomes
    # x 4..8 of 8, y 1..6 of 6 (clipped); box 0 (x 2..6) and box 2 (x 0..3) fall outside.
    out = run("central_crop((6, 8), boxes='boxes')", image=image, boxes=boxes, box_mask=mask)
    np.testing.assert_allclose(out["boxes"][1], [6 / 8, 3.5 / 6, 4 / 8, 5 / 6], atol=1e-6)
    assert out["box_mask"].tolist() == [0, 1, 0, 0]
    # A random-resized crop, resized to 40x40 (bilinear, antialiased): each box painted
    # in its own channel, its pixels above half intensity agree with the box up to the
    # resampling blur (one output pixel).
    rects = [(8, 4, 24, 20), (40, 12, 76, 36)]
    big = np.zeros((40, 80, 2), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        big[y0:y1, x0:x1, i] = 255
    _, big_boxes, big_mask = _painted(40, 80, rects)
    checked = 0
    for s in range(8):
        out = run("inception_crop(40, area_min=0.3, boxes='boxes')",
                  seed=tf.constant([s, 9], tf.int64), image=big, boxes=big_boxes,
                  box_mask=big_mask)
        for i in range(2):
            pixels = _pixel_box(out["image"][..., i:i + 1] > 127, 1)
            if out["box_mask"][i] and min(out["boxes"][i][2:]) * 40 >= 2:
                np.testing.assert_allclose(_to_pixels(out["boxes"][i], 40, 40), pixels,
                                           atol=1.0, err_msg=f"seed {s} box {i}")
                checked += 1
            elif not out["box_mask"][i]:
                assert pixels is None and not out["boxes"][i].any()
    assert checked >= 8
