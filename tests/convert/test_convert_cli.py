"""``jaxmm convert from-hf / to-hf`` and the jaxmm model folder format."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxmm.cli.convert import main  # noqa: E402
from jaxmm.convert import ConversionError, from_hf, load_converted  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _hf_model(family):
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1,
                                      n_head=4, initializer_range=0.2)
        return transformers.GPT2LMHeadModel(cfg).eval()
    if family == "llama":
        cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                       num_hidden_layers=1, num_attention_heads=4,
                                       num_key_value_heads=2, initializer_range=0.2)
        return transformers.LlamaForCausalLM(cfg).eval()
    cfg = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=1,
                                num_heads=4, decoder_start_token_id=0)
    return transformers.T5ForConditionalGeneration(cfg).eval()


def _logits(hf_model, ids):
    kwargs = {"input_ids": torch.tensor(ids)}
    if hf_model.config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = torch.tensor(ids[:, :3])
    with torch.no_grad():
        return hf_model(**kwargs).logits.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_from_hf_then_to_hf_round_trip(tmp_path, family):
    hf_model = _hf_model(family)
    hf_dir, jx_dir, back_dir = (str(tmp_path / n) for n in ("hf", "jaxmm", "back"))
    hf_model.save_pretrained(hf_dir)
    assert main(["from-hf", hf_dir, jx_dir, "--scan-layers", "--set", "dtype=float32"]) == 0
    with open(os.path.join(jx_dir, "jaxmm_model.json")) as f:
        meta = json.load(f)
    assert meta["format"] == "jaxmm-model" and meta["config"]["scan_layers"] is True
    assert meta["model"] == ("t5" if family == "t5" else "gpt")

    model, params, config = load_converted(jx_dir)
    direct = from_hf(hf_dir, scan_layers=True)
    assert config == direct.config
    jax.tree.map(np.testing.assert_array_equal, params, direct.params)

    ids = np.arange(2, 8)[None].repeat(2, 0)
    ours = (model.apply({"params": params}, ids, decoder_input_ids=ids[:, :3]) if family == "t5"
            else model.apply({"params": params}, ids)).logits
    np.testing.assert_allclose(np.asarray(ours), _logits(hf_model, ids), atol=1e-4)

    assert main(["to-hf", jx_dir, back_dir]) == 0
    again = type(hf_model).from_pretrained(back_dir).eval()
    np.testing.assert_allclose(_logits(again, ids), _logits(hf_model, ids), atol=1e-6)


def test_cli_entry_point_and_errors(tmp_path, capsys):
    hf_dir = str(tmp_path / "hf")
    _hf_model("gpt2").save_pretrained(hf_dir)
    out = str(tmp_path / "out")
    # The real entry point, as a user runs it.
    proc = subprocess.run([sys.executable, "-m", "jaxmm", "convert", "from-hf", hf_dir, out],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert "GPTLMHeadModel" in proc.stdout and os.path.isfile(
        os.path.join(out, "params.safetensors"))

    assert main(["from-hf", hf_dir, out]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["to-hf", hf_dir, str(tmp_path / "x")]) == 2  # an HF folder, not jaxmm
    assert "use jaxmm.convert.from_hf" in capsys.readouterr().err
    assert main(["from-hf", str(tmp_path / "missing"), str(tmp_path / "y")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["from-hf", hf_dir, str(tmp_path / "z"), "--set", "num_layer=3"]) == 2
    assert "Did you mean 'num_layers'" in capsys.readouterr().err

    with open(os.path.join(out, "params.safetensors"), "wb") as f:
        f.write(b"not a safetensors file")
    with pytest.raises(ConversionError, match="corrupt"):
        load_converted(out)
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"gpt2", "llama", "t5"} <= set(listed)
