"""The Colab notebooks in notebooks/: valid, output-free, and they run and compute what they say.

Each notebook runs in a subprocess through ``tests/notebook_runner.py`` (code
cells in order, the ``colab-install`` cell skipped) with
``JAXMM_NOTEBOOK_SMOKE=1``, the working tree on ``PYTHONPATH`` and a temporary
working directory. The runner exports chosen notebook variables as JSON, and
the tests check them against independent references: ``transformers`` for
the MiniLM embeddings, the exported classifier and GPT-2 generation, a NumPy
recomputation of recall@K and zero-shot accuracy, and the mesh arithmetic of
the sharding table.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
RUNNER = os.path.join(ROOT, "tests", "notebook_runner.py")
NOTEBOOKS = sorted(f for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
CACHE = os.path.join(ROOT, ".cache", "jax-tests")


# ---------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------


def test_the_four_notebooks_exist():
    assert NOTEBOOKS == ["01_quickstart_text.ipynb", "02_multimodal_scenes.ipynb",
                         "03_generation.ipynb", "04_sharding_and_training.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_valid_nbformat4_with_cleared_outputs(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)  # raises on any schema violation
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), name
    # The first code cell installs jaxmm in Colab and is the only one the runner skips.
    assert code[0].metadata.get("tags") == ["colab-install"] and "pip" in code[0].source
    assert not any("colab-install" in c.metadata.get("tags", []) for c in code[1:])
    assert 'os.environ.get("JAXMM_NOTEBOOK_SMOKE") == "1"' in "".join(c.source for c in code)
    # Plain Python only (the runner executes the source; Colab-only steps go through Python).
    for cell in code[1:]:
        lines = [line.lstrip() for line in cell.source.splitlines()]
        assert not any(line.startswith(("!", "%")) for line in lines), (name, cell.source)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_generator_and_committed_notebooks_agree():
    pytest.importorskip("nbformat")
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", os.path.join(NOTEBOOK_DIR, "make_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python notebooks/make_notebooks.py"


# ---------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One data directory for all notebooks (the scenes dataset is built once)."""
    return str(tmp_path_factory.mktemp("notebook_data"))


def run_notebook(name, workdir, data_dir, *names):
    """Runs notebook ``name`` in ``workdir``; returns the exported variables ``names``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # 1 device, as in Colab
    env.update(
        JAXMM_NOTEBOOK_SMOKE="1", JAXMM_DATA_DIR=data_dir,
        PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p]),
        JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    out = os.path.join(str(workdir), "exported.json")
    proc = subprocess.run(  # timeout: a hang guard, not a time limit
        [sys.executable, RUNNER, os.path.join(NOTEBOOK_DIR, name), "--export", out, *names],
        cwd=str(workdir), env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    with open(out, encoding="utf-8") as f:
        values = json.load(f)
    values["_stdout"] = proc.stdout
    return values


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quickstart_text(tmp_path, data_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.numpy import load_file

    v = run_notebook("01_quickstart_text.ipynb", tmp_path, data_dir,
                     "MINILM_DIR", "sentences", "embeddings", "similarity", "search_ranking",
                     "finetune_summary", "test_metrics", "labels", "new_sentences",
                     "jax_logits", "reload_diff", "export_dir")
    # Sentence embeddings equal the original model's (PyTorch, sentence-transformers recipe).
    ref_tok = transformers.AutoTokenizer.from_pretrained(v["MINILM_DIR"])
    enc = ref_tok(v["sentences"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = transformers.BertModel.from_pretrained(v["MINILM_DIR"])(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(v["embeddings"], want, atol=1e-4)
    sim = np.asarray(v["similarity"])
    np.testing.assert_allclose(sim, want @ want.T, atol=1e-4)
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 4] + 0.3
    assert v["search_ranking"][0] == "Transformers process sequences with self-attention."

    # Fine-tuning ran its steps and was evaluated on the whole test split.
    assert v["finetune_summary"]["step"] == 8
    assert 0.0 <= v["test_metrics"]["accuracy"] <= 1.0 and len(v["labels"]) == 64
    # init.hf loaded MiniLM into the classifier's encoder; the frozen table is untouched and
    # the trained layers moved away from (but stayed near) the checkpoint.
    base = load_file(os.path.join(v["MINILM_DIR"], "model.safetensors"))
    tuned = load_file(os.path.join(v["export_dir"], "model.safetensors"))
    np.testing.assert_array_equal(tuned["bert.embeddings.word_embeddings.weight"],
                                  base["embeddings.word_embeddings.weight"])
    q = "encoder.layer.0.attention.self.query.weight"
    delta = np.abs(tuned[f"bert.{q}"] - base[q]).max()
    assert 0 < delta < 0.05, delta
    # The exported folder is a Hugging Face model: same logits in PyTorch.
    assert v["reload_diff"] == 0.0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(v["export_dir"])
    hf_tok = transformers.AutoTokenizer.from_pretrained(v["export_dir"])
    with torch.no_grad():
        logits = hf(**hf_tok(v["new_sentences"], padding=True, return_tensors="pt")).logits
    np.testing.assert_allclose(v["jax_logits"], logits.numpy(), atol=1e-4)


def _recall_reference(sim, image_ids, text_image_ids, k):
    """Recall@k (percent) by explicit loops over images and captions. Ties favour the
    query (a correct item is ranked first among equal scores), as ``retrieval_recall``
    documents: a barely trained CLIP gives identical captions identical embeddings."""
    i2t = t2i = 0
    for i, img in enumerate(image_ids):
        order = sorted(range(sim.shape[1]), key=lambda j: (-sim[i, j], text_image_ids[j] != img))
        i2t += any(text_image_ids[j] == img for j in order[:k])
    for t, img in enumerate(text_image_ids):
        order = sorted(range(sim.shape[0]), key=lambda i: (-sim[i, t], image_ids[i] != img))
        t2i += img in [image_ids[i] for i in order[:k]]
    return 100.0 * i2t / len(image_ids), 100.0 * t2i / len(text_image_ids)


@pytest.mark.slow
def test_multimodal_scenes(tmp_path, data_dir):
    pytest.importorskip("pycocoevalcap")
    v = run_notebook("02_multimodal_scenes.ipynb", tmp_path, data_dir,
                     "WORKDIR", "clip_summary", "caption_summary", "recall", "similarity",
                     "image_ids", "caption_image_ids", "captions", "zero_shot_accuracy",
                     "logits", "shape_labels", "predictions", "caption_scores", "maps", "tokens")
    assert v["clip_summary"]["step"] == 30 and v["caption_summary"]["step"] == 30
    sim = np.asarray(v["similarity"])
    image_ids, caption_ids = v["image_ids"], v["caption_image_ids"]
    assert sim.shape == (64, 320) and len(set(image_ids)) == 64  # the whole test split
    assert all(caption_ids.count(i) == 5 for i in image_ids) and all(v["captions"])
    for k in (1, 5, 10):
        i2t, t2i = _recall_reference(sim, image_ids, caption_ids, k)
        assert v["recall"][f"i2t_R@{k}"] == pytest.approx(i2t)
        assert v["recall"][f"t2i_R@{k}"] == pytest.approx(t2i)
    logits, labels = np.asarray(v["logits"]), np.asarray(v["shape_labels"])
    assert logits.shape == (64, 4)
    assert v["zero_shot_accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == labels)))
    # Captions: strings scored by the COCO metrics; one attention map per generated token.
    assert len(v["predictions"]) == 8 and all(isinstance(p, str) for p in v["predictions"])
    scores = v["caption_scores"]
    assert {"BLEU-1", "BLEU-4", "CIDEr"} <= set(scores)
    assert all(math.isfinite(x) and x >= 0 for x in scores.values())
    maps = np.asarray(v["maps"])
    assert maps.shape[1:] == (4, 4)  # 32 px images, 8 px patches
    np.testing.assert_allclose(maps.sum((1, 2)), 1.0, atol=1e-5)
    assert 1 <= len(v["tokens"]) <= maps.shape[0]
    for figure in ("samples", "clip_curves", "retrieval", "cross_attention"):
        assert _is_png(os.path.join(v["WORKDIR"], f"{figure}.png")), figure


@pytest.mark.slow
def test_generation(tmp_path, data_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    v = run_notebook("03_generation.ipynb", tmp_path, data_dir,
                     "GPT2_DIR", "batch", "MAX_NEW_TOKENS", "greedy_ids", "beam_ids",
                     "beam_settings", "sampled_ids", "cli_output", "prompts")
    hf = transformers.GPT2LMHeadModel.from_pretrained(v["GPT2_DIR"]).eval()
    eos = hf.config.eos_token_id
    ids = torch.tensor(v["batch"]["input_ids"])
    mask = torch.tensor(v["batch"]["attention_mask"])
    common = dict(attention_mask=mask, max_new_tokens=v["MAX_NEW_TOKENS"], pad_token_id=eos)
    with torch.no_grad():
        greedy = hf.generate(ids, do_sample=False, **common)
        beams = hf.generate(ids, do_sample=False, **common, **v["beam_settings"])
    np.testing.assert_array_equal(v["greedy_ids"], greedy.numpy())
    np.testing.assert_array_equal(v["beam_ids"], beams.numpy())
    # Sampling: 2 continuations per prompt, each starting with its prompt.
    sampled = np.asarray(v["sampled_ids"])
    assert sampled.shape[0] == 4 and (sampled < hf.config.vocab_size).all()
    np.testing.assert_array_equal(sampled[::2, :ids.shape[1]], ids.numpy())
    # The CLI (same settings, first prompt alone) prints the best beam's continuation.
    tok = transformers.GPT2TokenizerFast.from_pretrained(v["GPT2_DIR"])
    best = tok.decode(np.asarray(v["beam_ids"])[0, ids.shape[1]:], skip_special_tokens=True)
    assert v["cli_output"].splitlines()[0] == best.replace("\n", "\\n")


@pytest.mark.slow
def test_sharding_and_training(tmp_path, data_dir):
    v = run_notebook("04_sharding_and_training.ipynb", tmp_path, data_dir,
                     "rows", "first_half", "resumed", "straight", "resumed_losses",
                     "straight_losses", "max_param_diff", "tensorboard_files")
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    assert "8 devices" in v["_stdout"] and "resuming from step 6" in v["_stdout"]
    # Each device holds shape / (product of the mesh axes its spec names) per dimension.
    sharded = 0
    for name, shape, _, spec, shard in v["rows"]:
        want = []
        for dim, axes in zip(shape, list(spec) + [None] * (len(shape) - len(spec))):
            axes = [] if axes is None else [axes] if isinstance(axes, str) else axes
            want.append(dim // math.prod(mesh[a] for a in axes))
        assert list(shard) == want, name
        sharded += want != list(shape)
    assert sharded > len(v["rows"]) // 2
    mlp = next(r for r in v["rows"] if r[0].endswith("mlp/wi/kernel"))
    assert mlp[2] == ["embed", "mlp"] and mlp[4] == [32, 128]  # (64, 256) over fsdp x tensor
    # Interrupted + resumed == uninterrupted, exactly.
    assert v["first_half"]["step"] == 6 and v["resumed"]["step"] == 12
    assert v["resumed_losses"] == v["straight_losses"] and len(v["straight_losses"]) >= 4
    assert v["max_param_diff"] == 0.0 and v["resumed"]["eval"] == v["straight"]["eval"]
    assert v["tensorboard_files"] and all("tfevents" in f for f in v["tensorboard_files"])
