"""Hugging Face ``detr`` (``DetrForObjectDetection``) <-> jaxmm DETR.

Imports facebook/detr-resnet-50-style checkpoints into
:class:`~jaxmm.models.detr.DetrForObjectDetection` with ``positions="attention"``,
``norm_position="post"`` and a ``frozen_batch`` ResNet backbone. Both backbone layouts
load: the timm one of the original checkpoints (``use_timm_backbone: true``:
``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ...) and the
Hugging Face ``ResNetBackbone`` one (``embedder``, ``encoder.stages.0.layers.0...``);
so do the tensor spellings of older and newer transformers (``backbone.conv_encoder``,
``out_proj``, ``fc1`` vs ``backbone``, ``o_proj``, ``mlp.fc1``). Export writes the
``ResNetBackbone`` layout, which transformers loads without timm.

The backbone's frozen BatchNorms are folded on import: jaxmm keeps
``scale = weight / sqrt(running_var + 1e-5)`` and ``bias = bias - running_mean * scale``;
export writes them back with ``running_mean = 0`` and ``running_var = 1 - 1e-5``.
The input projection, a 1x1 conv ``(D, C, 1, 1)``, is jaxmm's Dense kernel ``(C, D)``.

Not imported: dilated (DC5) backbones, learned position embeddings, non-ResNet
backbones, different encoder/decoder widths, ``DetrModel`` (no heads) and
``DetrForSegmentation``. Training-only knobs (``auxiliary_loss``, layer drop,
``activation_dropout``, the matcher costs) are ignored. Padded batches work as in
transformers: pass the processor's ``pixel_mask`` (``model.apply(..., pixel_mask=m)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxmm.convert import ConversionError, Converter, TensorStore, fields, register_converter
from jaxmm.convert.layers import LayerNames, conv, dense, norm, qkvo, transformer_layer
from jaxmm.convert.rules import Rule, Table, Transform, params_from_hf, params_to_hf
from jaxmm.models.detr import DetrConfig, DetrForObjectDetection

__all__ = ["backbone_from_hf", "config_from_hf", "config_to_hf", "tensor_table"]

BN_EPS = 1e-5  # DetrFrozenBatchNorm2d's epsilon (fixed in transformers)
_BACKBONE = "model.backbone.conv_encoder.model."
# Newer transformers spellings -> the checkpoints' (what save_pretrained writes).
_RENAMES = (("model.backbone.model.", _BACKBONE), (".o_proj.", ".out_proj."),
            (".mlp.fc1.", ".fc1."), (".mlp.fc2.", ".fc2."))
# timm ResNets that DETR checkpoints use: name -> (block, blocks per stage).
TIMM_RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
                "resnet50": ("bottleneck", (3, 4, 6, 3)),
                "resnet101": ("bottleneck", (3, 4, 23, 3)),
                "resnet152": ("bottleneck", (3, 8, 36, 3))}

_FIELDS = fields.FieldMap(
    ("num_layers", "decoder_layers", 6), ("encoder_layers", "encoder_layers", 6),
    ("d_model", "d_model", 256), ("num_heads", "decoder_attention_heads", 8),
    ("mlp_dim", "decoder_ffn_dim", 2048), ("num_queries", "num_queries", 100),
    ("dropout_rate", "dropout", 0.1), ("attention_dropout_rate", "attention_dropout", 0.0),
)
_ENCODER_LAYER = LayerNames(
    attention_norm="self_attn_layer_norm", mlp_norm="final_layer_norm",
    self_attention=qkvo("self_attn.", "q_proj", "k_proj", "v_proj", "out_proj"),
    mlp={"wi": "fc1", "wo": "fc2"})
_DECODER_LAYER = dataclasses.replace(
    _ENCODER_LAYER, cross_attention_norm="encoder_attn_layer_norm",
    cross_attention=qkvo("encoder_attn.", "q_proj", "k_proj", "v_proj", "out_proj"))


def _fail(problem: str) -> ConversionError:
    return ConversionError(f"Hugging Face DETR: {problem}")


# ---------------------------------------------------------------------------
# config.json <-> DetrConfig
# ---------------------------------------------------------------------------


def backbone_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """The jaxmm ResNet config values of a DETR ``config.json``'s backbone (a timm
    ``resnet*`` or a Hugging Face ``resnet``); a clear error for any other."""
    num_channels = hf.get("num_channels", 3)
    bb = hf.get("backbone_config")
    if bb is None and hf.get("use_timm_backbone", True):  # older config.json files
        kwargs = hf.get("backbone_kwargs") or {}
        bb = {"model_type": "timm_backbone", "backbone": hf.get("backbone") or "resnet50",
              "out_indices": kwargs.get("out_indices", [1, 2, 3, 4]),
              "output_stride": kwargs.get("output_stride")}
    bb = {"model_type": "resnet"} if bb is None else bb
    values = dict(stem="imagenet", norm="frozen_batch", norm_eps=BN_EPS,
                  num_channels=bb.get("num_channels", num_channels))
    if bb.get("model_type") == "timm_backbone":
        name = bb.get("backbone")
        if name not in TIMM_RESNETS:
            raise _fail(f"timm backbone {name!r} is not supported; jaxmm imports "
                        f"{', '.join(TIMM_RESNETS)}.")
        if bb.get("output_stride") not in (None, 32):
            raise _fail(f"output_stride={bb['output_stride']} (a dilated backbone) is not "
                        "supported; import a checkpoint without dilation.")
        if list(bb.get("out_indices") or [4])[-1] not in (4, -1):
            raise _fail(f"out_indices={bb['out_indices']}: DETR must read the last ResNet "
                        "stage (4).")
        block, depths = TIMM_RESNETS[name]
        return dict(values, block=block, stage_sizes=depths, width=64)
    if bb.get("model_type") != "resnet":
        raise _fail(f"backbone model_type {bb.get('model_type')!r} is not supported; jaxmm "
                    "imports ResNet backbones (Hugging Face 'resnet' or timm resnet18-152).")
    block = bb.get("layer_type", "bottleneck")
    depths = tuple(bb.get("depths") or (3, 4, 6, 3))
    width = bb.get("embedding_size", 64)
    hidden = list(bb.get("hidden_sizes") or (256, 512, 1024, 2048))
    want = [width * (4 if block == "bottleneck" else 1) * 2**i for i in range(len(depths))]
    problems = [f"{key}={bb[key]!r} (jaxmm's ResNet needs {want!r})"
                for key, want in (("hidden_act", "relu"), ("downsample_in_first_stage", False),
                                  ("downsample_in_bottleneck", False))
                if bb.get(key, want) != want]
    if block not in ("basic", "bottleneck"):
        problems.append(f"layer_type={block!r} (basic or bottleneck)")
    if hidden != want:
        problems.append(f"hidden_sizes={hidden} (jaxmm's ResNet needs {want} for "
                        f"embedding_size={width})")
    last = (bb.get("out_features") or [f"stage{len(depths)}"])[-1]
    if last != f"stage{len(depths)}":
        problems.append(f"out_features ending in {last!r} (DETR must read stage{len(depths)})")
    if problems:
        raise _fail(f"ResNet backbone_config with {'; '.join(problems)} is not supported.")
    return dict(values, block=block, stage_sizes=depths, width=width)


def config_from_hf(hf: dict[str, Any], **overrides) -> DetrConfig:
    """``config.json`` of a ``detr`` model -> :class:`DetrConfig` (plus overrides)."""
    if hf.get("dilation"):
        raise _fail("dilation=True (DC5) is not supported; import a checkpoint without "
                    "dilation (e.g. facebook/detr-resnet-50).")
    if hf.get("position_embedding_type", "sine") != "sine":
        raise _fail(f"position_embedding_type={hf['position_embedding_type']!r} is not "
                    "supported; jaxmm's DETR uses the sine positions ('sine').")
    for enc, dec, default in (("encoder_attention_heads", "decoder_attention_heads", 8),
                              ("encoder_ffn_dim", "decoder_ffn_dim", 2048)):
        if hf.get(enc, default) != hf.get(dec, default):
            raise _fail(f"{enc}={hf.get(enc, default)} differs from {dec}="
                        f"{hf.get(dec, default)}; jaxmm's DETR uses one width for both stacks.")
    values = dict(
        _FIELDS.from_hf(hf), backbone="resnet", backbone_config=backbone_from_hf(hf),
        activation=fields.activation_from_hf(hf.get("activation_function", "relu"),
                                             "Hugging Face DETR"),
        num_classes=fields.num_labels_from_hf(hf), norm_eps=1e-5, norm_position="post",
        positions="attention")
    values.update(overrides)
    return DetrConfig.from_dict(values)


def _export_problems(cfg: DetrConfig) -> list[str]:
    problems = fields.unsupported(cfg, "Hugging Face DETR", positions="attention",
                                  norm_position="post", norm_eps=1e-5, backbone="resnet")
    if cfg.backbone == "resnet":
        problems += fields.unsupported(cfg.backbone_config, "Hugging Face DETR's backbone",
                                       norm="frozen_batch", norm_eps=BN_EPS, stem="imagenet",
                                       projection_dim=None)
    return problems


def config_to_hf(cfg: DetrConfig) -> dict[str, Any]:
    """:class:`DetrConfig` -> ``config.json`` with a Hugging Face ``resnet`` backbone."""
    problems = _export_problems(cfg)
    if problems:
        raise ConversionError(
            f"Cannot export this DETR as Hugging Face 'detr': {'; '.join(problems)}. "
            "Build it like size 'detr_resnet50' (positions='attention', post-LN, a "
            "frozen_batch ResNet).")
    rc, n = cfg.backbone_config, len(cfg.backbone_config.stage_sizes)
    expand = 4 if rc.block == "bottleneck" else 1
    backbone = dict(
        model_type="resnet", num_channels=rc.num_channels, embedding_size=rc.width,
        hidden_sizes=[rc.width * expand * 2**i for i in range(n)], depths=list(rc.stage_sizes),
        layer_type=rc.block, hidden_act="relu", downsample_in_first_stage=False,
        downsample_in_bottleneck=False, out_features=[f"stage{n}"], out_indices=[n],
        stage_names=["stem"] + [f"stage{i + 1}" for i in range(n)])
    out = _FIELDS.to_hf(cfg)
    out.update(
        model_type="detr", architectures=["DetrForObjectDetection"], use_timm_backbone=False,
        backbone_config=backbone, num_channels=rc.num_channels,
        encoder_attention_heads=cfg.num_heads, encoder_ffn_dim=cfg.mlp_dim,
        activation_function=fields.activation_to_hf(cfg.activation), activation_dropout=0.0,
        position_embedding_type="sine", dilation=False, auxiliary_loss=False,
        is_encoder_decoder=True, **fields.labels_to_hf(cfg.num_classes))
    return out


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class FoldedBatchNorm(Rule):
    """A frozen BatchNorm's ``{hf}.weight/bias/running_mean/running_var`` <-> a jaxmm
    :class:`~jaxmm.models.resnet.FrozenBatchNorm` at ``path`` (``scale``, ``bias``), with
    the statistics folded in on import and neutral statistics written on export."""

    eps: float = BN_EPS

    _PARTS = ("weight", "bias", "running_mean", "running_var")

    def hf_names(self) -> list[str]:
        return [f"{self.hf}.{part}" for part in self._PARTS]

    def keys(self) -> set[str]:
        return {f"{self.path}/scale", f"{self.path}/bias"}

    def load(self, store: TensorStore, flat: dict, origin: dict) -> None:
        parts = [store.take(name) for name in self.hf_names()]
        if any(p is None for p in parts):
            return
        weight, bias, mean, var = (np.asarray(p, np.float64) for p in parts)
        scale = weight / np.sqrt(var + self.eps)
        flat[f"{self.path}/scale"] = scale.astype(np.float32)
        flat[f"{self.path}/bias"] = (bias - mean * scale).astype(np.float32)
        origin[f"{self.path}/scale"] = origin[f"{self.path}/bias"] = f"{self.hf}.*"

    def save(self, flat, out) -> set[str]:
        scale = self.read(flat, f"{self.path}/scale", None)
        out[f"{self.hf}.weight"] = np.asarray(scale, np.float32)
        out[f"{self.hf}.bias"] = np.asarray(self.read(flat, f"{self.path}/bias", None),
                                            np.float32)
        out[f"{self.hf}.running_mean"] = np.zeros(scale.shape, np.float32)
        out[f"{self.hf}.running_var"] = np.full(scale.shape, 1.0 - self.eps, np.float32)
        return self.keys()


def _conv_norm(conv_hf: str, norm_hf: str, path: str, norm_path: str) -> list[Rule]:
    return [*conv(conv_hf, path, bias=False), FoldedBatchNorm(hf=norm_hf, path=norm_path)]


def backbone_table(rc: Any, timm: bool, prefix: str = _BACKBONE) -> list[Rule]:
    """A ResNet backbone's tensors (timm's or the Hugging Face ``ResNetBackbone``'s
    names after ``prefix``) <-> the params of a ``frozen_batch``
    :class:`~jaxmm.models.resnet.ResNetEncoder` at ``backbone/``."""
    convs = 2 if rc.block == "basic" else 3
    out_width = rc.width * (4 if rc.block == "bottleneck" else 1)
    if timm:
        rules = _conv_norm(f"{prefix}conv1", f"{prefix}bn1", "backbone/stem",
                           "backbone/stem_norm")
    else:
        stem = f"{prefix}embedder.embedder."
        rules = _conv_norm(f"{stem}convolution", f"{stem}normalization", "backbone/stem",
                           "backbone/stem_norm")
    for s, depth in enumerate(rc.stage_sizes):
        for j in range(depth):
            path = f"backbone/stage{s}_block{j}/"
            hf = f"{prefix}layer{s + 1}.{j}." if timm else f"{prefix}encoder.stages.{s}.layers.{j}."
            for k in range(convs):
                names = ((f"{hf}conv{k + 1}", f"{hf}bn{k + 1}") if timm else
                         (f"{hf}layer.{k}.convolution", f"{hf}layer.{k}.normalization"))
                rules += _conv_norm(*names, f"{path}Conv_{k}", f"{path}FrozenBatchNorm_{k}")
            if j == 0 and (s > 0 or rc.width != out_width):  # a projection shortcut
                names = ((f"{hf}downsample.0", f"{hf}downsample.1") if timm else
                         (f"{hf}shortcut.convolution", f"{hf}shortcut.normalization"))
                rules += _conv_norm(*names, f"{path}shortcut", f"{path}shortcut_norm")
    return rules


def _conv1x1(x: np.ndarray) -> np.ndarray:
    if x.ndim != 4 or x.shape[2:] != (1, 1):
        raise ValueError(f"expected a 1x1 conv weight (out, in, 1, 1), got {x.shape}")
    return x[:, :, 0, 0].T


# PyTorch 1x1 Conv2d weight (out, in, 1, 1) <-> Flax Dense kernel (in, out).
CONV1X1_DENSE = Transform(_conv1x1, lambda k: np.asarray(k).T[:, :, None, None])


def _layers(hf_prefix: str, path: str, count: int, rules: list[Rule]) -> list[Rule]:
    """One layer's rules for ``count`` layers (``{i}`` in ``hf_prefix`` and ``path``)."""
    return [dataclasses.replace(r.under(hf_prefix, path), layers=count) for r in rules]


def tensor_table(cfg: DetrConfig, timm: bool = False) -> Table:
    """``DetrForObjectDetection`` tensors (the checkpoints' spelling) <-> jaxmm DETR params;
    ``timm``: the backbone in timm's layout (else Hugging Face's ``ResNetBackbone``)."""
    heads = cfg.num_heads
    return Table.of(
        backbone_table(cfg.backbone_config, timm),
        Rule("model.input_projection.weight", "input_projection/kernel", CONV1X1_DENSE),
        Rule("model.input_projection.bias", "input_projection/bias"),
        _layers("model.encoder.layers.{i}.", "encoder_layer_{i}/", cfg.encoder_layers,
                transformer_layer(_ENCODER_LAYER, heads)),
        Rule("model.query_position_embeddings.weight", "query_embeddings"),
        _layers("model.decoder.layers.{i}.", "decoder_layer_{i}/", cfg.num_layers,
                transformer_layer(_DECODER_LAYER, heads)),
        norm("model.decoder.layernorm", "decoder_norm"),
        dense("class_labels_classifier", "class_head"),
        [r for j in range(3) for r in dense(f"bbox_predictor.layers.{j}", f"box_head_{j}")],
        ignore=(r"\.num_batches_tracked$",))


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    if "class_labels_classifier.weight" not in store:
        kind = ("DetrForSegmentation" if any(k.startswith("detr.") for k in store.keys())
                else "DetrModel (no detection heads)")
        raise _fail(f"{store.source} is a {kind} checkpoint; jaxmm imports "
                    "DetrForObjectDetection checkpoints (e.g. facebook/detr-resnet-50).")
    cfg = config_from_hf(hf_config, **options)
    for old, new in _RENAMES:
        store.rename(old, new)
    timm = f"{_BACKBONE}conv1.weight" in store
    model = DetrForObjectDetection(cfg)
    return model, params_from_hf(tensor_table(cfg, timm), store)


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    hf_config = config_to_hf(model.config)  # refuses what Hugging Face cannot hold
    return hf_config, params_to_hf(tensor_table(model.config), params)


register_converter(Converter(
    model_types=("detr",), load=_load, save=_save,
    handles=lambda m: isinstance(m, DetrForObjectDetection),
))
