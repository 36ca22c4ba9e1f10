"""Model configs: shared fields declared once, checked once, normalised before construction.

The shared field groups live in ``jaxmm.layers.config_fields`` and
``jaxmm.models.config_fields`` (plus the captioner/VQA decoder piece); every
family inherits them and changes defaults through ``DEFAULTS``.
"""

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import jaxmm.evaluate.evaluators  # noqa: F401  (evaluator options: configs too)
import jaxmm.generation  # noqa: F401  (GenerationConfig)
import jaxmm.models  # noqa: F401  (registers the families)
import jaxmm.train  # noqa: F401  (task options)
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.layers import TransformerConfig
from jaxmm.layers import config_fields as layer_fields
from jaxmm.models import config_fields as model_fields
from jaxmm.models.bert import BertConfig, RobertaConfig
from jaxmm.models.captioner import CaptionerConfig, ConditionalDecoderFields
from jaxmm.models.clip import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from jaxmm.models.dual_encoder import DualEncoderConfig
from jaxmm.models.encoder_decoder import EncoderDecoderConfig
from jaxmm.models.fusion import FusionConfig
from jaxmm.models.gpt import GPTConfig
from jaxmm.models.modality import ModalityEncoderConfig
from jaxmm.models.registry import MODELS
from jaxmm.models.resnet import ResNetConfig
from jaxmm.models.video import VideoConfig
from jaxmm.models.vit import ViTConfig
from jaxmm.models.vqa import VQAConfig
from jaxmm.models.whisper import WhisperConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]

GROUPS = (
    layer_fields.PrecisionFields, layer_fields.ComputeFields, layer_fields.NormFields,
    layer_fields.TransformerFields, layer_fields.DropoutFields, layer_fields.LayerVariantFields,
    model_fields.VocabFields, model_fields.PadTokenFields, model_fields.SpecialTokenFields,
    model_fields.TokenFields,
    model_fields.DecoderStartFields, ConditionalDecoderFields,
)
SHARED = {f.name for g in GROUPS for f in dataclasses.fields(g)}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _jaxmm_configs():
    """Every ConfigBase subclass jaxmm defines (registered families and nested ones)."""
    registered = {spec.config_cls for _, spec in MODELS.items()}
    found = {c for c in _subclasses(ConfigBase) if c.__module__.startswith("jaxmm.")}
    return sorted(found | {c for c in registered if c.__module__.startswith("jaxmm.")},
                  key=lambda c: c.__qualname__)


def _declarer(cls, name):
    """The class whose body declares field ``name`` (DEFAULTS re-declarations skipped)."""
    for klass in cls.__mro__:
        own = vars(klass).get("__annotations__", {})
        if name in own and name not in vars(klass).get("DEFAULTS", {}):
            return klass
    raise AssertionError(f"{cls.__name__}.{name} has no declaration")


# ---------------------------------------------------------------------------
# Declared once
# ---------------------------------------------------------------------------


def test_no_group_declares_a_field_another_group_declares():
    seen = {}
    for group in GROUPS:
        for name in vars(group).get("__annotations__", {}):
            assert name not in seen, f"{name} declared by {seen.get(name)} and {group}"
            seen[name] = group.__name__


# Same name, another meaning (not a re-declaration): a CNN's "batch" / "group" norm.
OTHER_MEANING = {(ResNetConfig, "norm")}


@pytest.mark.parametrize("cls", _jaxmm_configs(), ids=lambda c: c.__qualname__)
def test_every_config_takes_its_shared_fields_from_the_groups(cls):
    body = set(vars(cls).get("__annotations__", {})) - set(vars(cls).get("DEFAULTS", {}))
    body -= {name for owner, name in OTHER_MEANING if owner is cls}
    if cls not in GROUPS:
        assert not body & SHARED, f"{cls.__name__} re-declares {sorted(body & SHARED)}"
    for f in dataclasses.fields(cls):
        if f.name in SHARED and (cls, f.name) not in OTHER_MEANING:
            assert _declarer(cls, f.name) in GROUPS, (cls, f.name)


def test_the_families_use_the_groups():
    """The fields the issue counted 12, 11 and ~10 times now come from one group each."""
    compute = [BertConfig, GPTConfig, EncoderDecoderConfig, ViTConfig, CLIPTextConfig,
               CLIPVisionConfig, WhisperConfig, FusionConfig, TransformerConfig]
    assert all(issubclass(c, layer_fields.ComputeFields) for c in compute)
    assert issubclass(ResNetConfig, layer_fields.PrecisionFields)
    assert all(issubclass(c, layer_fields.TransformerFields) for c in compute)
    tokens = [BertConfig, GPTConfig, EncoderDecoderConfig, CLIPTextConfig, WhisperConfig]
    assert all(issubclass(c, model_fields.TokenFields) for c in tokens)
    assert all(issubclass(c, ConditionalDecoderFields) for c in (CaptionerConfig, VQAConfig))


def test_re_declaring_an_inherited_field_is_refused():
    with pytest.raises(TypeError, match=r"re-declares the field 'd_model'.*DEFAULTS"):
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Wide(layer_fields.TransformerFields):  # noqa: F841
            d_model: int = 1024
    with pytest.raises(TypeError, match=r"Unknown config key 'd_modle'.*'d_model'"):
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Typo(layer_fields.TransformerFields):  # noqa: F841
            DEFAULTS = {"d_modle": 1024}


def test_defaults_change_the_field_itself():
    """DEFAULTS re-declares the inherited field: introspection, ``Cls()`` and the
    field's type and position agree."""
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Wide(layer_fields.ComputeFields, layer_fields.TransformerFields):
        DEFAULTS = {"d_model": 1024, "dtype": "bfloat16"}
        extra: int = 1

    fields = {f.name: f for f in dataclasses.fields(Wide)}
    assert fields["d_model"].default == 1024 and Wide().d_model == 1024
    assert Wide().dtype == "bfloat16" and layer_fields.ComputeFields().dtype == "float32"
    assert fields["d_model"].kw_only
    names = [f.name for f in dataclasses.fields(Wide)]
    base = [f.name for f in dataclasses.fields(layer_fields.TransformerFields)]
    assert names[: len(base)] == base  # inherited order kept, own fields last
    with pytest.raises(ConfigError, match="d_model .1000. is not divisible by num_heads"):
        Wide(d_model=1000, num_heads=3)


NEW_FIELD_SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    import jaxmm, jaxmm.models
    from jaxmm.models.registry import MODELS
    from jaxmm.models.clip import CLIPConfig
    assert jaxmm.__file__.startswith(sys.argv[1]), jaxmm.__file__
    families = {spec.config_cls for _, spec in MODELS.items()}
    with_compute = [c for c in families if "scan_layers" in c.field_names()]
    assert len(with_compute) >= 9, with_compute
    def derived(cfg):  # the stack configs a family builds
        out = []
        for name in ("transformer", "transformer_config", "encoder_transformer",
                     "decoder_transformer", "vit"):
            attr = getattr(cfg, name, None)
            if callable(attr):  # EncoderDecoderConfig.transformer(decoder), fusion's (layers)
                attr = attr(True) if name == "transformer" else attr(1)
            if attr is not None:
                out.append(attr)
        return out
    for cls in with_compute:
        assert cls().quantization == "none", cls
        stacks = derived(cls.from_dict({"quantization": "int8"}))
        assert stacks and all(s.quantization == "int8" for s in stacks), cls
    clip = CLIPConfig.from_dict({"quantization": "int8"})
    assert clip.text.quantization == clip.vision.quantization == "int8"
    bad = {}
    for cls in with_compute:
        try:
            cls(quantization="int4")
        except jaxmm.config.ConfigError as e:
            bad[cls] = str(e).split(": ", 1)[1]
    assert len(set(bad.values())) == 1 and len(bad) == len(with_compute), bad
    print("ok", len(with_compute))
""")


def test_a_field_added_to_a_group_reaches_every_family(tmp_path):
    """Adding an option to ComputeFields (one edit, in one file) gives it to every
    family, to the stacks they derive, to CLIP's towers, with one check."""
    shutil.copytree(ROOT / "jaxmm", tmp_path / "jaxmm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "jaxmm" / "layers" / "config_fields.py"
    src = path.read_text()
    field = '    attention_impl: str = "auto"\n'
    check = '        self.require_one_of("attention_impl", ATTENTION_IMPLS)\n'
    assert src.count(field) == 1 and src.count(check) == 1
    src = src.replace(field, field + '    quantization: str = "none"\n')
    new_check = '        self.require_one_of("quantization", ("none", "int8"))\n'
    src = src.replace(check, check + new_check)
    path.write_text(src)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", NEW_FIELD_SCRIPT, str(tmp_path)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")


# ---------------------------------------------------------------------------
# Checked once
# ---------------------------------------------------------------------------

FAMILIES = [BertConfig, ViTConfig, CLIPTextConfig, CLIPVisionConfig, WhisperConfig, GPTConfig,
            EncoderDecoderConfig, FusionConfig, TransformerConfig]


@pytest.mark.parametrize("bad,expected", [
    (dict(remat_policy="some"),
     "remat_policy='some' is not one of none, full, dots, dots_no_batch, everything."),
    (dict(dtype="float8"), "dtype='float8' is not one of float32, bfloat16, float16."),
    (dict(attention_impl="flash"), "attention_impl='flash' is not one of auto, plain, xla, cudnn."),
    (dict(attention_dropout_rate=1.0), "attention_dropout_rate must be in [0, 1); got 1.0."),
    (dict(num_layers=0), "num_layers must be >= 1; got 0."),
    (dict(norm_eps=0.0), "norm_eps must be > 0; got 0.0."),
])
def test_a_bad_shared_value_gets_the_same_message_in_every_family(bad, expected):
    for cls in FAMILIES:
        with pytest.raises(ConfigError) as err:
            cls(**bad)
        assert str(err.value) == f"{cls.__name__}: {expected}"


def test_dropout_and_width_checks_are_shared():
    for cls in (BertConfig, ViTConfig, FusionConfig, VQAConfig):
        with pytest.raises(ConfigError,
                           match=rf"^{cls.__name__}: dropout_rate must be in \[0, 1\)"):
            cls(dropout_rate=-0.1)
    for cls in (BertConfig, ViTConfig, CLIPVisionConfig, FusionConfig):
        with pytest.raises(ConfigError, match=r"d_model \(10\) is not divisible by num_heads "
                                              r"\(4\); change one of them\.$"):
            cls(d_model=10, num_heads=4)
    with pytest.raises(ConfigError, match="change one of them or set head_dim"):
        GPTConfig(d_model=10, num_heads=4)
    assert GPTConfig(d_model=10, num_heads=4, head_dim=8).transformer.resolved_head_dim == 8
    with pytest.raises(ConfigError, match="^ResNetConfig: dtype='int8' is not one of"):
        ResNetConfig(dtype="int8")
    with pytest.raises(ConfigError, match="^ModalityEncoderConfig: vocab_size must be >= 1"):
        ModalityEncoderConfig(vocab_size=0)


# ---------------------------------------------------------------------------
# Defaults unchanged (literal Hugging Face / paper values)
# ---------------------------------------------------------------------------


def _values(cfg, names):
    return tuple(getattr(cfg, n) for n in names)


def test_family_defaults_are_the_published_ones():
    w = ("num_layers", "d_model", "num_heads", "mlp_dim", "activation", "norm_eps")
    assert _values(BertConfig(), w) == (12, 768, 12, 3072, "gelu", 1e-12)
    b = BertConfig()
    assert (b.vocab_size, b.pad_token_id, b.dropout_rate, b.attention_dropout_rate) == (
        30522, 0, 0.1, 0.1)
    r = RobertaConfig()
    assert (r.vocab_size, r.max_position_embeddings, r.pad_token_id, r.bos_token_id,
            r.eos_token_id, r.norm_eps, r.type_vocab_size) == (50265, 514, 1, 0, 2, 1e-5, 1)
    assert _values(CLIPTextConfig(), w) == (12, 512, 8, 2048, "quick_gelu", 1e-5)
    assert CLIPTextConfig().vocab_size == 49408 and CLIPTextConfig().eos_token_id == 49407
    assert _values(CLIPVisionConfig(), w) == (12, 768, 12, 3072, "quick_gelu", 1e-5)
    assert _values(WhisperConfig(), w) == (4, 384, 6, 1536, "gelu", 1e-5)
    assert _values(WhisperConfig.from_size("whisper-tiny"), w) == (4, 384, 6, 1536, "gelu", 1e-5)
    wh = WhisperConfig()
    assert (wh.vocab_size, wh.decoder_start_token_id, wh.eos_token_id) == (51865, 50258, 50257)
    assert _values(GPTConfig(), w) == (12, 768, 12, 3072, "gelu_tanh", 1e-5)
    assert GPTConfig().vocab_size == 50257 and GPTConfig().bos_token_id == 50256
    assert _values(EncoderDecoderConfig(), w) == (6, 512, 8, 2048, "relu", 1e-6)
    t5 = EncoderDecoderConfig()
    assert (t5.vocab_size, t5.eos_token_id, t5.pad_token_id, t5.decoder_start_token_id) == (
        32128, 1, 0, 0)
    assert _values(ViTConfig(), w) == (12, 768, 12, 3072, "gelu", 1e-12)
    assert _values(FusionConfig(), w) == (2, 64, 4, 256, "gelu", 1e-6)
    assert ResNetConfig().norm_eps == 1e-5 and ModalityEncoderConfig().vocab_size == 1024
    for cfg in (BertConfig(), ViTConfig(), CLIPTextConfig(), FusionConfig()):
        assert _values(cfg, ("dtype", "param_dtype", "scan_layers", "remat_policy",
                             "attention_impl")) == ("float32", "float32", False, "none", "auto")


@pytest.mark.parametrize("cls", sorted({s.config_cls for _, s in MODELS.items()
                                        if s.config_cls.__module__.startswith("jaxmm.")},
                                       key=lambda c: c.__qualname__),
                         ids=lambda c: c.__qualname__)
def test_every_size_round_trips_through_to_dict(cls):
    """``to_dict`` output (what export_params / save_converted write) loads back."""
    for cfg in [cls()] + [cls.from_size(s) for s in cls.SIZES]:
        assert cls.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------
# Normalised before the object exists
# ---------------------------------------------------------------------------


def test_no_config_is_mutated_after_construction():
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "jaxmm").rglob("*.py")
            if re.search(r"object\.__setattr__", p.read_text())]
    assert hits == []


def test_clip_top_level_compute_fields_reach_both_towers():
    for cfg in (CLIPConfig(dtype="bfloat16", remat_policy="full"),
                CLIPConfig.from_dict({"dtype": "bfloat16", "remat_policy": "full"}),
                CLIPConfig.from_size("tiny", dtype="bfloat16", remat_policy="full"),
                CLIPConfig().replace(dtype="bfloat16", remat_policy="full")):
        for tower in (cfg.text, cfg.vision):
            assert (tower.dtype, tower.remat_policy) == ("bfloat16", "full")
    # The top-level value wins over a tower's; None (old exported configs) leaves them.
    cfg = CLIPConfig.from_dict({"text": {"dtype": "float16"}, "dtype": "bfloat16"})
    assert cfg.text.dtype == cfg.vision.dtype == "bfloat16"
    legacy = CLIPConfig.from_size("tiny").to_dict()
    legacy["text"]["dtype"] = "float16"
    legacy.update(dtype=None, param_dtype=None, scan_layers=None, remat_policy=None,
                  attention_impl=None)
    cfg = CLIPConfig.from_dict(legacy)
    assert (cfg.text.dtype, cfg.vision.dtype) == ("float16", "float32")
    assert "dtype" not in cfg.to_dict()  # not a field: the towers hold it
    with pytest.raises(ConfigError, match="^CLIPTextConfig: dtype='fp8' is not one of"):
        CLIPConfig(dtype="fp8")


def test_shipped_clip_config_runs_both_towers_in_bfloat16():
    from jaxmm.config import load_config
    from jaxmm.models import registry
    from jaxmm.train import resolve_config

    resolved = resolve_config(load_config(str(ROOT / "configs" / "clip_contrastive.py") +
                                          ":tiny"))
    model = registry.build("clip", resolved.model.size, **resolved.model.config.to_dict())
    assert model.config.text.dtype == model.config.vision.dtype == "bfloat16"
    # The shortcut is reachable from the command line even where the file does not set it.
    resolved = resolve_config({"task": {"name": "contrastive"},
                               "model": {"name": "clip", "size": "tiny"}},
                              ["model.config.param_dtype=bfloat16"])
    cfg = registry.build("clip", resolved.model.size, **resolved.model.config.to_dict()).config
    assert cfg.text.param_dtype == cfg.vision.param_dtype == "bfloat16"


def test_direct_construction_normalises_raw_values():
    clip = CLIPConfig(text={"num_layers": 1}, vision={})
    assert isinstance(clip.text, CLIPTextConfig) and clip.text.num_layers == 1
    assert isinstance(clip.vision, CLIPVisionConfig)
    video = VideoConfig(spatial={"image_size": 16, "patch_size": 8, "num_layers": 1,
                                 "d_model": 32, "num_heads": 4, "mlp_dim": 64})
    assert isinstance(video.spatial, ViTConfig) and video.spatial.d_model == 32
    fusion = FusionConfig(modalities=["image", "text"])
    assert fusion.modalities == ("image", "text") and hash(fusion)
    dual = DualEncoderConfig(image_encoder_config={"size": "tiny", "num_layers": 1})
    assert isinstance(dual.image_encoder_config, ViTConfig)
    assert dual.image_encoder_config.num_layers == 1
    enc = ModalityEncoderConfig(encoder="vit", config="tiny")
    assert enc.config == ViTConfig.from_size("tiny")
    with pytest.raises(ConfigError, match=r"Unknown config key 'num_layer' for GPTConfig.*"
                                          r"'num_layers'"):
        GPTConfig(num_layer=2)
    with pytest.raises(ConfigError, match="Unknown config key 'num_layer' for CLIPTextConfig"):
        CLIPConfig(text={"num_layer": 2})
    with pytest.raises(ConfigError, match="VideoConfig: spatial must be a ViTConfig or a mapping"):
        VideoConfig(spatial=CLIPVisionConfig())


def test_decoder_piece_derives_its_ids_when_made():
    decoder = dict(GPTConfig.SIZES["tiny"], vocab_size=40, bos_token_id=5, eos_token_id=(7, 8),
                   pad_token_id=None)
    for cls, extra in ((CaptionerConfig, {}), (VQAConfig, {"mode": "generate"})):
        cfg = cls(decoder=decoder, **extra)
        assert isinstance(cfg.decoder, GPTConfig) and cfg.decoder.add_cross_attention
        assert (cfg.decoder_start_token_id, cfg.pad_token_id) == (5, 7)  # bos; first eos
        assert (cfg.vocab_size, cfg.bos_token_id, cfg.eos_token_id) == (40, 5, (7, 8))
        explicit = cls(decoder=decoder, decoder_start_token_id=3, pad_token_id=0, **extra)
        assert (explicit.decoder_start_token_id, explicit.pad_token_id) == (3, 0)
        assert cls.from_dict(explicit.to_dict()) == explicit
        no_ids = dict(decoder, bos_token_id=None, eos_token_id=None)
        with pytest.raises(ConfigError, match=rf"^{cls.__name__}: the decoder needs "
                                              "decoder_start_token_id and pad_token_id"):
            cls(decoder=no_ids, **extra)
    assert VQAConfig(decoder=dict(decoder, bos_token_id=None, eos_token_id=None)).mode == \
        "classify"  # a classifier does not use its decoder
    assert CaptionerConfig().uses_projection is False  # tiny ViT 64 wide, tiny GPT 64 wide
    assert VQAConfig.from_size("small", mode="generate").uses_projection is False
    assert VQAConfig(decoder=dict(decoder, d_model=32, num_heads=4)).uses_projection
