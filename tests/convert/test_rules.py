"""The declarative conversion engine (jaxmm.convert.rules) on its own: every transform
against a NumPy reference, round trips in loop and scan layouts, and the errors."""

import jax
import numpy as np
import pytest

from jaxmm.convert import CONVERTERS, ConversionError, Converter, from_hf
from jaxmm.convert.io import TensorStore, write_hf_folder
from jaxmm.convert.layers import LayerNames, qkvo, transformer_layer
from jaxmm.convert.rules import (
    CONV,
    SCALAR,
    TRANSPOSE,
    Rule,
    Table,
    Tied,
    Zeros,
    chain,
    heads,
    params_from_hf,
    params_to_hf,
    split,
    squeeze,
    stack,
)

E, H, D, L, F = 8, 2, 4, 3, 12  # width, heads, head size, layers, MLP width


def _layer_rules():
    per_head = heads(-1, H)
    return [
        Rule("attn.qkv.weight", ("attn/query/kernel", "attn/key/kernel", "attn/value/kernel"),
             chain(TRANSPOSE, split(3), per_head)),
        Rule("attn.qkv.bias", ("attn/query/bias", "attn/key/bias", "attn/value/bias"),
             chain(split(3), per_head)),
        Rule("attn.out.weight", "attn/out/kernel", chain(TRANSPOSE, heads(0, H))),
        Rule("norm.weight", "norm/scale"),
        Zeros("attn/out/bias", shape=(E,)),
    ]


def _table(scan):
    return Table.of(
        Rule("patch.weight", "patch/kernel", CONV),
        Rule("pos", "pos", squeeze(0)),
        Rule("scale", "scale", SCALAR),
        Rule("embed.weight", "embed/embedding"),
        stack("layers.{i}.", "stack", L, scan, _layer_rules()),
        Tied("head.weight", "embed/embedding", write=True),
        ignore=(r"\.inv_freq$",))


def _tensors(rng):
    t = {"patch.weight": rng.normal(size=(E, 3, 2, 2)), "pos": rng.normal(size=(1, 5, E)),
         "scale": np.array(1.5), "embed.weight": rng.normal(size=(11, E))}
    t["head.weight"] = t["embed.weight"].copy()
    for i in range(L):
        t[f"layers.{i}.attn.qkv.weight"] = rng.normal(size=(3 * E, E))
        t[f"layers.{i}.attn.qkv.bias"] = rng.normal(size=(3 * E,))
        t[f"layers.{i}.attn.out.weight"] = rng.normal(size=(E, E))
        t[f"layers.{i}.norm.weight"] = rng.normal(size=(E,))
    return {k: np.asarray(v, np.float32) for k, v in t.items()}


@pytest.mark.parametrize("scan", [False, True])
def test_every_transform_matches_numpy_and_round_trips(rng, scan):
    tensors = _tensors(rng)
    store = TensorStore({**tensors, "layers.0.rotary.inv_freq": np.ones(2, np.float32)})
    params = params_from_hf(_table(scan), store)  # finish(): nothing missing or left over

    np.testing.assert_array_equal(params["patch"]["kernel"],
                                  tensors["patch.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["pos"], tensors["pos"][0])
    assert params["scale"].shape == ()
    for i in range(L):
        layer = (jax.tree.map(lambda a, i=i: a[i], params["stack"]["layers"]["layer"]) if scan
                 else params["stack"][f"layers_{i}"]["layer"])
        qkv = tensors[f"layers.{i}.attn.qkv.weight"]  # (3E, E) PyTorch Linear
        for j, role in enumerate(("query", "key", "value")):
            want = qkv[j * E:(j + 1) * E].T.reshape(E, H, D)
            np.testing.assert_array_equal(layer["attn"][role]["kernel"], want)
            np.testing.assert_array_equal(layer["attn"][role]["bias"], tensors[
                f"layers.{i}.attn.qkv.bias"][j * E:(j + 1) * E].reshape(H, D))
        np.testing.assert_array_equal(layer["attn"]["out"]["kernel"],
                                      tensors[f"layers.{i}.attn.out.weight"].T.reshape(H, D, E))
        assert not layer["attn"]["out"]["bias"].any()
    if scan:
        assert params["stack"]["layers"]["layer"]["attn"]["query"]["kernel"].shape == (L, E, H, D)
        assert not any(k.startswith("layers_") for k in params["stack"])

    back = params_to_hf(_table(scan), params)
    assert back.keys() == tensors.keys()  # Zeros dropped, the Tied copy written, buffer gone
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_transformer_layer_rules_round_trip_with_zero_and_missing_biases(rng):
    names = LayerNames(attention_norm="ln1", mlp_norm="ln2", mlp={"wi": "fc1", "wo": "fc2"},
                       self_attention=qkvo("attn.", "q", "k", "v", "o"))
    rules = transformer_layer(names, H, 1, norm_bias=False, mlp_bias=False,
                              zero_bias={"self_attention/key": (1, D)})
    table = Table.of(stack("h.{i}.", "dec", 2, True, rules))
    shapes = {"attn.q.weight": (E, E), "attn.q.bias": (E,), "attn.k.weight": (D, E),
              "attn.v.weight": (D, E), "attn.v.bias": (D,), "attn.o.weight": (E, E),
              "attn.o.bias": (E,), "ln1.weight": (E,), "ln2.weight": (E,),
              "fc1.weight": (F, E), "fc2.weight": (E, F)}
    tensors = {f"h.{i}.{name}": rng.normal(size=shape).astype(np.float32)
               for i in range(2) for name, shape in shapes.items()}
    params = params_from_hf(table, TensorStore(tensors))
    layer = params["dec"]["layers"]["layer"]
    assert layer["self_attention"]["key"]["kernel"].shape == (2, E, 1, D)  # one kv head
    assert layer["self_attention"]["key"]["bias"].shape == (2, 1, D)
    assert not layer["self_attention"]["key"]["bias"].any()
    assert set(layer["mlp"]["wi"]) == {"kernel"} and set(layer["attention_norm"]) == {"scale"}
    back = params_to_hf(table, params)
    assert back.keys() == tensors.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_missing_unexpected_and_mis_shaped_tensors_make_one_line(rng):
    tensors = _tensors(rng)
    del tensors["layers.1.norm.weight"]
    tensors["layers.0.attn.out.weight"] = np.zeros((E, E + 1), np.float32)  # not H heads
    tensors["extra.weight"] = np.zeros(2, np.float32)
    with pytest.raises(ConversionError) as err:
        params_from_hf(_table(False), TensorStore(tensors, source="ckpt"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("ckpt: ")
    assert "missing tensors: layers.1.norm.weight" in msg
    assert "layers.0.attn.out.weight (8, 9) -> stack/layers_0/layer/attn/out/kernel" in msg
    assert "does not split into 2 heads" in msg
    assert msg.endswith("; unexpected tensors: extra.weight")  # layer 2 was still taken


def test_expected_shapes_name_tensor_and_path_and_set_dtypes(rng):
    table = Table.of(Rule("a.weight", "a/kernel", TRANSPOSE), Rule("b", "b"))
    store = TensorStore({"a.weight": np.ones((3, 2), np.float32), "b": np.ones(4, np.float32)})
    expected = {"a": {"kernel": np.zeros((2, 3), np.float16)}, "b": np.zeros(5, np.float32)}
    with pytest.raises(ConversionError, match=r"^checkpoint: tensor shapes do not match "
                       r"config.json: b -> b: checkpoint \(4,\) vs config \(5,\)$"):
        params_from_hf(table, store, expected=expected)
    store = TensorStore({"a.weight": np.ones((3, 2), np.float32)})
    params = params_from_hf(Table.of(table.rules[0]), store, expected=expected)
    assert params["a"]["kernel"].dtype == np.float16


def test_tied_copies_must_match_and_export_checks_coverage(rng):
    tensors = _tensors(rng)
    tensors["head.weight"] = tensors["embed.weight"] + 1
    with pytest.raises(ConversionError, match="head.weight differs from embed.weight; untie"):
        params_from_hf(Table.of(Rule("embed.weight", "embed/embedding"),
                                Tied("head.weight", "embed/embedding", why="untie it")),
                       TensorStore(tensors), finish=False)
    params = {"embed": {"embedding": np.ones((3, 2))}, "extra": {"kernel": np.ones(2)}}
    with pytest.raises(ConversionError, match="No Hugging Face tensor holds the parameters "
                                              "extra/kernel"):
        params_to_hf(Table.of(Rule("embed.weight", "embed/embedding")), params)
    with pytest.raises(ConversionError, match="Parameter lm/kernel is missing; it is exported "
                                              "as lm.weight"):
        params_to_hf(Table.of(Rule("lm.weight", "lm/kernel", TRANSPOSE)), params)


def test_converter_registry_dispatches_and_suggests(tmp_path):
    write_hf_folder(str(tmp_path), {"model_type": "toy"}, {"w": np.arange(6.0).reshape(2, 3)})

    class Toy:
        config = "toy config"

    def load(hf_config, store, **options):
        return Toy(), params_from_hf(Table.of(Rule("w", "w/kernel", TRANSPOSE)), store)

    with CONVERTERS.temporary("toy", Converter(("toy",), load)):
        conv = from_hf(str(tmp_path))
    np.testing.assert_array_equal(conv.params["w"]["kernel"], np.arange(6.0).reshape(2, 3).T)
    assert conv.config == "toy config" and "toy" not in CONVERTERS
    with pytest.raises(ConversionError, match="Unsupported model_type 'toy'"):
        from_hf(str(tmp_path))
    with pytest.raises(ConversionError, match="Did you mean 'gpt2'"):
        CONVERTERS.get("gtp2")
