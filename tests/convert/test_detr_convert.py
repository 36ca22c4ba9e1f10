"""Hugging Face DETR (DetrForObjectDetection) <-> jaxmm DETR: parity with transformers on
tiny random weights both ways, the timm and ResNetBackbone tensor layouts, facebook/
detr-resnet-50's config, and clear refusals."""

import json
import os
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from jaxmm.convert import ConversionError, from_hf, load_converted, save_converted, to_hf
from jaxmm.convert.detr import config_from_hf, tensor_table
from jaxmm.models import build
from jaxmm.models.detr import DetrForObjectDetection

TINY = dict(d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=5,
            num_labels=3)
BACKBONES = {  # HF ResNet sizes that jaxmm's ResNet has (stem width = embedding_size)
    "bottleneck": dict(embedding_size=4, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
    "basic": dict(layer_type="basic", embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 2, 1],
                  out_features=["stage3"]),
}
# The Hugging Face ResNetBackbone names -> timm's (torchvision layout), the layout of
# facebook/detr-resnet-50 (use_timm_backbone=True).
BACKBONE = "model.backbone.conv_encoder.model."
TIMM_NAMES = [
    (r"^embedder\.embedder\.convolution", "conv1"), (r"^embedder\.embedder\.normalization", "bn1"),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0"),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1"),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}"),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}"),
]
# The checkpoints' spelling (what save_pretrained writes) -> newer transformers modules'.
NATIVE_NAMES = [(r"backbone\.conv_encoder\.model\.", "backbone.model."),
                (r"\.out_proj\.", ".o_proj."), (r"\.fc([12])\.", r".mlp.fc\1.")]


def _rename(tensors, rules):
    out = {}
    for key, value in tensors.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _timm_layout(tensors):
    return {(BACKBONE + _rename({k[len(BACKBONE):]: 0}, TIMM_NAMES).popitem()[0]
             if k.startswith(BACKBONE) else k): v for k, v in tensors.items()}


def _hf_detr(layer_type, **overrides):
    backbone = transformers.ResNetConfig(**{"out_features": ["stage4"], **BACKBONES[layer_type]})
    cfg = transformers.DetrConfig(use_timm_backbone=False, backbone_config=backbone,
                                  **{**TINY, **overrides})
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(cfg).eval()
    with torch.no_grad():  # non-trivial frozen BatchNorms
        for name, buf in model.named_buffers():
            kind = name.rsplit(".", 1)[-1]
            if kind in ("weight", "bias", "running_mean"):
                buf.normal_(1.0 if kind == "weight" else 0.0, 0.3)
            elif kind == "running_var":
                buf.uniform_(0.5, 2.0)
    return model


def _hf_outputs(model, image, pixel_mask=None):
    """Final and per-layer (decoder norm + heads on every layer's output) predictions."""
    layer_out = []  # each decoder layer's output, caught by a hook
    hooks = [layer.register_forward_hook(lambda mod, args, out: layer_out.append(out))
             for layer in model.model.decoder.layers]
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(image.transpose(0, 3, 1, 2).copy()),
                    pixel_mask=None if pixel_mask is None else torch.from_numpy(pixel_mask))
        hidden = [model.model.decoder.layernorm(h) for h in layer_out]
        layer_logits = torch.stack([model.class_labels_classifier(h) for h in hidden])
        layer_boxes = torch.stack([model.bbox_predictor(h).sigmoid() for h in hidden])
    for hook in hooks:
        hook.remove()
    return out, layer_logits.numpy(), layer_boxes.numpy()


def test_import_matches_transformers_in_every_tensor_layout(tmp_path, rng):
    layer_type = "bottleneck"  # (basic blocks: the export test)
    hf = _hf_detr(layer_type)
    hf.save_pretrained(tmp_path / "hf")
    image = rng.normal(size=(2, 64, 48, 3)).astype(np.float32)
    ref, ref_layer_logits, ref_layer_boxes = _hf_outputs(hf, image)
    conv = from_hf(str(tmp_path / "hf"))
    assert isinstance(conv.model, DetrForObjectDetection)
    cfg = conv.config
    assert (cfg.positions, cfg.norm_position, cfg.encoder_layers, cfg.num_layers) == (
        "attention", "post", 1, 2)
    assert cfg.backbone_config.norm == "frozen_batch" and cfg.backbone_config.block == layer_type
    apply = jax.jit(conv.model.apply)
    out = apply({"params": conv.params}, image)
    np.testing.assert_allclose(out.logits, ref.logits, atol=1e-4)
    np.testing.assert_allclose(out.pred_boxes, ref.pred_boxes, atol=1e-4)
    np.testing.assert_allclose(out.encoder_last_hidden_state, ref.encoder_last_hidden_state,
                               atol=1e-4)
    np.testing.assert_allclose(out.last_hidden_state, ref.last_hidden_state, atol=1e-4)
    np.testing.assert_allclose(out.layer_logits, ref_layer_logits, atol=1e-4)
    np.testing.assert_allclose(out.layer_pred_boxes, ref_layer_boxes, atol=1e-4)

    # A padded batch: image 1 is 40x24 in the 64x48 canvas.
    pixel_mask = np.ones(image.shape[:3], np.int64)
    pixel_mask[1, 40:], pixel_mask[1, :, 24:] = 0, 0
    padded = (image * pixel_mask[..., None]).astype(np.float32)
    ref, ref_layer_logits, _ = _hf_outputs(hf, padded, pixel_mask)
    out = apply({"params": conv.params}, padded, pixel_mask=pixel_mask)
    np.testing.assert_allclose(out.logits, ref.logits, atol=1e-4)
    np.testing.assert_allclose(out.pred_boxes, ref.pred_boxes, atol=1e-4)
    np.testing.assert_allclose(out.layer_logits, ref_layer_logits, atol=1e-4)
    unmasked = apply({"params": conv.params}, padded)  # the mask matters
    assert np.abs(unmasked.logits[1] - ref.logits[1].numpy()).max() > 1e-2

    # The same weights under the other spellings import to the same params.
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    assert "model.backbone.conv_encoder.model.embedder.embedder.convolution.weight" in saved
    layouts = {"native": _rename(saved, NATIVE_NAMES), "timm": _timm_layout(saved)}
    assert "model.backbone.conv_encoder.model.layer1.0.conv1.weight" in layouts["timm"]
    assert "model.backbone.model.embedder.embedder.convolution.weight" in layouts["native"]
    for name, tensors in layouts.items():
        folder = tmp_path / name
        os.makedirs(folder)
        save_file(tensors, folder / "model.safetensors")
        (folder / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
        again = from_hf(str(folder))
        jax.tree.map(np.testing.assert_array_equal, again.params, conv.params)


def test_export_loads_in_transformers_with_the_same_outputs(tmp_path, rng):
    backbone = dict(block="basic", stage_sizes=(2, 1), width=8, stem="imagenet",
                    norm="frozen_batch")
    model = build("detr", None, backbone="resnet", backbone_config=backbone, num_layers=2,
                  encoder_layers=1, d_model=32, num_heads=4, mlp_dim=64, num_queries=5,
                  num_classes=3, norm_position="post", positions="attention")
    image = rng.normal(size=(2, 40, 32, 3)).astype(np.float32)
    shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), image)["params"])
    params = jax.tree_util.tree_map_with_path(  # random values everywhere (no init compile)
        lambda path, s: ((path[-1].key == "scale") + 0.2 * rng.normal(size=s.shape))
        .astype(np.float32), shapes)
    out_dir = to_hf(model, params, str(tmp_path / "hf"))
    hf = transformers.DetrForObjectDetection.from_pretrained(out_dir).eval()
    bb = hf.config.backbone_config  # a Hugging Face ResNet: loads without timm
    assert bb.model_type == "resnet" and list(bb.depths) == [2, 1] and bb.layer_type == "basic"
    ours = jax.jit(model.apply)({"params": params}, image)
    ref, ref_layer_logits, ref_layer_boxes = _hf_outputs(hf, image)
    np.testing.assert_allclose(ours.logits, ref.logits, atol=1e-4)
    np.testing.assert_allclose(ours.pred_boxes, ref.pred_boxes, atol=1e-4)
    np.testing.assert_allclose(ours.layer_logits, ref_layer_logits, atol=1e-4)
    np.testing.assert_allclose(ours.layer_pred_boxes, ref_layer_boxes, atol=1e-4)
    # Import of the export: the same params (folded BatchNorms to float rounding).
    back = from_hf(out_dir)
    assert back.config == model.config
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 back.params, params)
    # jaxmm's own folder (what `jaxmm convert from-hf` writes) keeps the architecture.
    native = load_converted(save_converted(back.model, back.params, str(tmp_path / "jaxmm")))
    assert native.config == model.config


def test_detr_resnet50_config_and_tensor_names():
    # facebook/detr-resnet-50's config.json (written by transformers 4: timm backbone).
    legacy = dict(model_type="detr", use_timm_backbone=True, backbone="resnet50",
                  backbone_config=None, dilation=False, num_channels=3, num_queries=100,
                  encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                  decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                  d_model=256, activation_function="relu", dropout=0.1, attention_dropout=0.0,
                  position_embedding_type="sine", auxiliary_loss=False,
                  id2label={str(i): f"c{i}" for i in range(91)})
    preset = build("detr", "detr_resnet50").config
    assert config_from_hf(legacy) == preset
    # transformers 5's DetrConfig() (the same model; backbone_config of type timm_backbone).
    assert config_from_hf(transformers.DetrConfig(num_labels=91).to_dict()) == preset
    # Every tensor of a Hugging Face DETR-R50 (ResNetBackbone layout), no more, no less.
    resnet50 = transformers.ResNetConfig(out_features=["stage4"])
    with torch.device("meta"):
        hf = transformers.DetrForObjectDetection(transformers.DetrConfig(
            use_timm_backbone=False, backbone_config=resnet50, num_labels=91))
    names = set(_rename(dict.fromkeys(hf.state_dict()), [
        (r"backbone\.model\.", "backbone.conv_encoder.model."), (r"\.o_proj\.", ".out_proj."),
        (r"\.mlp\.fc([12])\.", r".fc\1.")]))
    assert set(tensor_table(preset).hf_names()) == names
    # The timm layout: torchvision-style names, as many tensors.
    timm = tensor_table(preset, timm=True).hf_names()
    for name in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
                 "layer1.0.downsample.1.running_mean", "layer3.5.conv3.weight",
                 "layer4.2.bn3.bias"):
        assert BACKBONE + name in timm
    assert not any("layer2.1.downsample" in n for n in timm) and len(timm) == len(names)


@pytest.mark.parametrize("change, message", [
    (dict(dilation=True), "dilation=True"),
    (dict(position_embedding_type="learned"), "position_embedding_type='learned'"),
    (dict(encoder_attention_heads=2), "encoder_attention_heads=2 differs"),
    (dict(backbone_config={"model_type": "swin"}), "backbone model_type 'swin'"),
    (dict(backbone_config=None, backbone="resnet50d"), "timm backbone 'resnet50d'"),
    (dict(backbone_config={"model_type": "resnet", "downsample_in_bottleneck": True}),
     "downsample_in_bottleneck=True"),
    (dict(backbone_config={"model_type": "resnet", "hidden_sizes": [64, 128, 256, 512]}),
     "hidden_sizes="),
])
def test_unsupported_configs_are_refused_by_name(change, message):
    hf = {**dict(model_type="detr", use_timm_backbone=True, backbone="resnet50"), **change}
    with pytest.raises(ConversionError, match=re.escape(message)):
        config_from_hf(hf)


def test_base_model_and_non_hf_architectures_are_refused(tmp_path):
    hf = _hf_detr("basic")
    hf.save_pretrained(tmp_path / "hf")
    file = tmp_path / "hf" / "model.safetensors"
    save_file({k: v for k, v in load_file(file).items()
               if not k.startswith(("class_labels", "bbox_predictor"))}, file)
    with pytest.raises(ConversionError, match="DetrModel .* DetrForObjectDetection"):
        from_hf(str(tmp_path / "hf"))
    model = build("detr", "tiny")  # jaxmm's compact variant: no Hugging Face equivalent
    params = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ConversionError, match="positions='memory'.*norm='group'"):
        to_hf(model, params["params"], str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "config.json")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "detr"


def test_detr_scenes_config_has_the_hf_architecture():
    from jaxmm.models import registry
    from jaxmm.train.run_config import load_run_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    c = load_run_config(os.path.join(root, "configs", "detr_scenes.py") +
                        ":detr_resnet50,data=coco/2017")
    model = registry.build(c.model.name, c.model.config.to_dict())
    # The checkpoint's architecture with COCO's 80 classes (--config.init.hf=FOLDER keeps
    # the 91-class head at its random init) and the config's dropout.
    assert model.config.replace(num_classes=91, dropout_rate=0.1) == build(
        "detr", "detr_resnet50").config


@pytest.mark.slow
def test_full_size_detr_resnet50_matches_transformers(tmp_path, rng):
    """facebook/detr-resnet-50's architecture at full size (41M random weights)."""
    cfg = transformers.DetrConfig(use_timm_backbone=False, num_labels=91,
                                  backbone_config=transformers.ResNetConfig(
                                      out_features=["stage4"]))
    torch.manual_seed(0)
    hf = transformers.DetrForObjectDetection(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    image = rng.normal(size=(1, 128, 96, 3)).astype(np.float32)
    ref, _, _ = _hf_outputs(hf, image)
    conv = from_hf(str(tmp_path / "hf"))
    assert conv.config == build("detr", "detr_resnet50").config
    out = jax.jit(conv.model.apply)({"params": conv.params}, image)
    np.testing.assert_allclose(out.logits, ref.logits, atol=1e-4)
    np.testing.assert_allclose(out.pred_boxes, ref.pred_boxes, atol=1e-4)
    np.testing.assert_allclose(out.encoder_last_hidden_state, ref.encoder_last_hidden_state,
                               atol=1e-4)
