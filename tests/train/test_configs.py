"""The shipped configs/*.py load, take their :args, and resolve against the registries."""

import glob
import os

import jax
import pytest

from jaxmm.config import ConfigError, load_config
from jaxmm.models import registry
from jaxmm.train import resolve_config
from jaxmm.train.run_config import parse_config_arg
from tests.train.helpers import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_loads_and_resolves(path):
    cfg = load_config(path)
    assert cfg.task.name and cfg.model.name and cfg.num_steps > 0
    if cfg.model.name in registry.available():  # families still landing resolve later
        resolved = resolve_config(cfg)
        assert resolved.model.config.to_dict()  # every model field filled in


def test_parse_config_arg():
    a = parse_config_arg("tiny,steps=5,lit=true", size="base", steps=10, lit=False)
    assert (a.size, a.steps, a.lit) == ("tiny", 5, True)
    with pytest.raises(ConfigError, match="Unknown config argument 'step'.*'steps'"):
        parse_config_arg("step=5", size="base", steps=10)
    cfg = load_config(os.path.join(ROOT, "configs", "vit_classification.py") + ":tiny,steps=7")
    assert cfg.num_steps == 7 and cfg.model.config.image_size == 32


def test_switching_a_sub_config_kind_fills_that_kind_s_fields():
    """A captioner whose image encoder is CLIP's (not the default ViT) resolves to a
    complete CLIPVisionConfig: the ViT preset's extra keys (class_token...) are not merged in."""
    from jaxmm.models.clip import CLIPVisionConfig

    vision = {"image_size": 32, "patch_size": 8, "d_model": 32, "num_layers": 1,
              "num_heads": 2, "mlp_dim": 64}
    resolved = resolve_config({"task": {"name": "captioning"}, "model": {
        "name": "captioner", "config": {"encoder": "clip_vision", "encoder_config": vision}}})
    enc = resolved.model.config.encoder_config.to_dict()
    assert set(enc) == set(CLIPVisionConfig.field_names())
    assert {k: enc[k] for k in vision} == vision
    model = registry.build("captioner", resolved.model.config.to_dict())
    assert isinstance(model.config.encoder_config, CLIPVisionConfig)
    # The usual case is unchanged: partial overrides merge into the size preset.
    vit = resolve_config({"task": {"name": "captioning"}, "model": {
        "name": "captioner", "size": "tiny", "config": {"encoder_config": {"num_layers": 1}}}})
    assert vit.model.config.encoder_config.num_layers == 1
    assert "class_token" in vit.model.config.encoder_config


@pytest.mark.slow
def test_init_batch_takes_image_size_from_a_nested_encoder_config():
    """A VQA model whose image encoder is a ViT: the init batch uses the ViT's image size
    (it sits two configs deep), not the synthetic default."""
    from jaxmm.train import build_task

    vit = {"image_size": 48, "patch_size": 16, "d_model": 32, "num_layers": 1, "num_heads": 2,
           "mlp_dim": 64}
    config = resolve_config({"task": {"name": "vqa"}, "model": {"name": "vqa", "config": {
        "num_answers": 5,
        "fusion": {"kind": "early", "modalities": ["image", "text"], "num_layers": 1,
                   "d_model": 32, "num_heads": 2, "mlp_dim": 64, "max_positions": 64},
        "encoders": {"image": {"encoder": "vit", "config": vit},
                     "text": {"width": 32, "vocab_size": 50}}}}})
    task = build_task(config)
    batch = task.example_batch(2)
    assert batch["image"].shape[1:3] == (48, 48)
    task.init(jax.random.PRNGKey(0), batch)  # the ViT accepts it


def test_overrides_reach_the_shared_fields_of_a_model_config():
    """``model.config`` lists every field, the shared ones (from the field groups)
    included; an override reaches the built model; a typo names the nearest key."""
    config = resolve_config({"task": {"name": "mlm"}, "model": {"name": "bert_mlm",
                                                                "size": "tiny"}},
                            ["model.config.remat_policy=full", "model.config.dropout_rate=0.2",
                             "model.config.pad_token_id=3"])
    assert set(config.model.config) == set(registry.get("bert_mlm").config_cls.field_names())
    cfg = registry.build("bert_mlm", config.model.size, **config.model.config.to_dict()).config
    assert (cfg.remat_policy, cfg.dropout_rate, cfg.pad_token_id, cfg.d_model) == (
        "full", 0.2, 3, 128)
    assert cfg.transformer_config.remat_policy == "full"
    with pytest.raises(ConfigError, match=r"Unknown config key 'remat_polcy'.*'remat_policy'"):
        resolve_config({"task": {"name": "mlm"}, "model": {"name": "bert_mlm"}},
                       ["model.config.remat_polcy=full"])
