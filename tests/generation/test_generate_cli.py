"""The ``jaxmm generate`` command: same text as Hugging Face ``generate``, every
model folder kind, clear errors (exit code 2)."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxmm.convert import from_hf  # noqa: E402
from tests.generation.hf_tiny import BOS, EOS, PAD, VOCAB, hf_model  # noqa: E402


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 folder with a word-level tokenizer (``w4`` .. ``w127``)."""
    from tests.data.data_helpers import save_word_tokenizer

    path = tmp_path_factory.mktemp("gpt2_cli")
    torch.manual_seed(0)
    hf_model("gpt2").eval().save_pretrained(path)
    save_word_tokenizer(path, {"<unk>": 0, "<s>": BOS, "</s>": EOS, "<pad>": PAD}, 4, VOCAB)
    return path


@pytest.mark.slow
def test_cli_generate_matches_hf(gpt2_folder):
    import subprocess
    import sys
    from pathlib import Path

    prompts = ["w5 w9 w77 w12", "w100 w3 w40"]
    cmd = [sys.executable, "-m", "jaxmm", "generate", str(gpt2_folder), "--max-new-tokens", "6",
           "--num-beams", "2", "--repetition-penalty", "1.2"]
    for p in prompts:
        cmd += ["--prompt", p]
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(gpt2_folder / "tokenizer.json"), bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", unk_token="<unk>", padding_side="left")
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    enc = hf_tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = hf.generate(**enc, max_new_tokens=6, num_beams=2, repetition_penalty=1.2)
    expected = hf_tok.batch_decode(ref[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(expected) and run.stdout.strip().split("\n") == [e.strip() for e in expected]


def test_cli_runs_from_jaxmm_folders(gpt2_folder, tmp_path, capsys):
    from jaxmm.cli import generate as generate_cli
    from jaxmm.convert import save_converted
    from jaxmm.models import name_of
    from jaxmm.train import export_params

    model, params, cfg = from_hf(str(gpt2_folder))
    export_params({"params": params}, tmp_path / "export", model_name=name_of(model),
                  model_config=cfg.to_dict())
    args = ["--prompt", "w5 w9 w77", "--prompt", "w8", "--max-new-tokens", "5"]
    assert generate_cli.main([str(gpt2_folder)] + args) == 0
    from_hf_text = capsys.readouterr().out
    # A training workdir (export/ inside) with the tokenizer given apart.
    assert generate_cli.main([str(tmp_path), "--tokenizer", str(gpt2_folder)] + args) == 0
    assert capsys.readouterr().out == from_hf_text and from_hf_text.strip()
    # A jaxmm model folder (jaxmm convert from-hf).
    save_converted(model, params, str(tmp_path / "native"))
    assert generate_cli.main([str(tmp_path / "native"), "--tokenizer", str(gpt2_folder)]
                             + args) == 0
    assert capsys.readouterr().out == from_hf_text
    assert generate_cli.main([str(tmp_path / "native" / "nope"), "--tokenizer",
                              str(gpt2_folder)] + args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_int8_weights_give_the_fp32_greedy_text(gpt2_folder, capsys):
    from jaxmm.cli import generate as generate_cli

    args = [str(gpt2_folder), "--prompt", "w5 w9 w77", "--prompt", "w8", "--max-new-tokens", "5"]
    assert generate_cli.main(args) == 0
    fp32 = capsys.readouterr().out
    assert generate_cli.main(args + ["--int8"]) == 0
    assert capsys.readouterr().out == fp32 and fp32.strip()


def test_cli_errors(gpt2_folder, tmp_path, capsys):
    from jaxmm.cli import generate as generate_cli

    assert generate_cli.main([str(tmp_path), "--prompt", "w5"]) == 2
    assert "holds no tokenizer" in capsys.readouterr().err
    assert generate_cli.main([str(gpt2_folder)]) == 2
    assert "at least one --prompt" in capsys.readouterr().err
    code = generate_cli.main([str(gpt2_folder), "--prompt", "w5", "--num-beams", "2",
                              "--num-return-sequences", "3"])
    assert code == 2 and "cannot exceed num_beams" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_reads_hub_ids_from_the_local_hub_cache(gpt2_folder, tmp_path, capsys):
    """``jaxmm generate org/name`` loads the snapshot that a Hugging Face cache holds
    (laid out as ``huggingface_hub`` writes it), offline, and says what to do when the
    cache lacks the id."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from jaxmm.cli import generate as generate_cli

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--jaxmm-tests--tiny-gpt2"
    shutil.copytree(gpt2_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    args = ["--prompt", "w5 w9 w77", "--max-new-tokens", "5"]
    assert generate_cli.main([str(gpt2_folder)] + args) == 0
    from_folder = capsys.readouterr().out
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[2]

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "jaxmm", "generate", *argv], cwd=root,
                              env=env, capture_output=True, text=True, timeout=1800)

    hub = run("jaxmm-tests/tiny-gpt2", *args)
    assert hub.returncode == 0, hub.stderr
    assert hub.stdout == from_folder and from_folder.strip()
    missing = run("jaxmm-tests/other", *args, "--download")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "'jaxmm-tests/other' does not exist" in missing.stderr
    assert "could not be fetched" in missing.stderr
