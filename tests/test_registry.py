"""The one Registry class behind models, tasks, converters, ops and presets."""

import pytest

from jaxmm.config import ConfigError
from jaxmm.registry import Registry


def test_lookup_nearest_names_and_listing():
    reg = Registry("widget", config_key="widget.name")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    assert reg.get("alpha") == 1
    with pytest.raises(ConfigError) as e:
        reg.get("alpah")
    msg = str(e.value)
    assert "Unknown widget 'alpah' (config key widget.name)" in msg
    assert "Did you mean 'alpha'?" in msg
    assert msg.endswith("Registered widgets: alpha, beta.")
    assert "Did you mean" not in str(reg.unknown("zzzzzz"))


def test_custom_error_class():
    class MyError(ValueError):
        pass

    reg = Registry("thing", error=MyError)
    with pytest.raises(MyError, match="Unknown thing 'x'"):
        reg.get("x")


def test_decorator_and_duplicate_names():
    reg = Registry("widget")

    @reg.register("w")
    def make():
        return 1

    assert reg.get("w") is make
    reg.register("w", make)  # the same object again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("w", lambda: 2)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", make)


def test_same_definition_may_be_registered_again():
    """A module executed twice (reload, notebook cell) re-registers its classes."""
    reg = Registry("model")
    namespace_a, namespace_b = {}, {}
    source = "class Model:\n    pass\n"
    exec(source, namespace_a)
    exec(source, namespace_b)
    reg.register("m", namespace_a["Model"])
    reg.register("m", namespace_b["Model"])
    assert reg.get("m") is namespace_b["Model"]


def test_temporary_registration_restores_the_table():
    reg = Registry("widget")
    reg.register("kept", "original")
    with reg.temporary("kept", "override"), reg.temporary("new", "tmp"):
        assert reg.get("kept") == "override" and reg.get("new") == "tmp"
    assert reg.get("kept") == "original"
    assert "new" not in reg
    with pytest.raises(RuntimeError), reg.temporary("boom", 1):
        raise RuntimeError
    assert "boom" not in reg


def test_loader_runs_once_before_first_lookup():
    calls = []

    def loader():
        calls.append(1)
        reg.register("builtin", 0)

    reg = Registry("widget", loader=loader)
    assert not calls  # creating the registry imports nothing
    assert reg.names() == ["builtin"]
    assert "builtin" in reg and len(reg) == 1
    assert calls == [1]


def test_failed_loader_is_retried():
    state = {"fail": True}

    def loader():
        if state["fail"]:
            raise ImportError("optional dependency missing")
        reg.register("ok", 1)

    reg = Registry("widget", loader=loader)
    with pytest.raises(ImportError):
        reg.names()
    state["fail"] = False
    assert reg.names() == ["ok"]


@pytest.mark.parametrize("module, registry, name, typo", [
    ("jaxmm.models.registry", "MODELS", "gpt", "gtp"),
    ("jaxmm.train.tasks.base", "TASKS", "contrastive", "contrastiv"),
    ("jaxmm.data.preprocess", "OPS", "resize", "resise"),
    ("jaxmm.data.catalog", "PRESETS", "scenes", "scene"),
])
def test_library_registries(module, registry, name, typo):
    import importlib

    reg = getattr(importlib.import_module(module), registry)
    assert isinstance(reg, Registry)
    assert name in reg.names()
    with pytest.raises(ConfigError, match=f"Did you mean '{name}'"):
        reg.get(typo)
