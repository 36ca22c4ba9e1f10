"""Model folders on disk, and one loader that knows them all.

jaxmm reads three folder formats:

* a **Hugging Face folder** (``config.json`` + safetensors): :func:`jaxmm.convert.from_hf`;
* a **jaxmm model folder** (``jaxmm_model.json`` + ``params.safetensors``, written by
  ``jaxmm convert from-hf``): :func:`jaxmm.convert.load_converted`;
* a **params export** (``model.json`` + Orbax ``variables/``, written at the end of
  every training run into ``WORKDIR/export``): :func:`export_params` /
  :func:`load_exported` below.

:func:`load_model` takes any of them, or a training workdir that holds an
``export/``, and returns ``(model, params)``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxmm import storage

__all__ = ["configure_orbax", "export_params", "load_exported", "load_model"]

# Orbax splits each replicated shard among its replicas for parallel writes
# ("replica-parallel"), which costs one small compiled slice per shard and
# shape; below this many bytes per slice that overhead dominates, so smaller
# arrays are written whole by one replica.
MIN_REPLICA_PARALLEL_BYTES = 4 << 20
_orbax_configured = False


def configure_orbax() -> None:
    """Registers jaxmm's jax.Array handler options with Orbax (once per process)."""
    global _orbax_configured
    if _orbax_configured:
        return
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # Orbax warns that it overrides the default handler
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_BYTES),
            override=True)
    finally:
        absl_log.setLevel(level)
    _orbax_configured = True


# ---------------------------------------------------------------------------
# Params export (model.json + variables/)
# ---------------------------------------------------------------------------


def export_params(variables: Any, directory: str | os.PathLike, *, model_name: str,
                  model_config: dict[str, Any], task: str | None = None) -> str:
    """Writes ``variables`` alone (Orbax) and ``model.json`` to ``directory`` (a path or a
    ``gs://`` URL)."""
    configure_orbax()
    directory = storage.as_path(directory)  # absolute; a gs:// URL as it is
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(directory / "variables", variables, force=True)
    ckpt.wait_until_finished()
    if jax.process_index() == 0:
        (directory / "model.json").write_text(json.dumps(
            {"model": model_name, "config": model_config, "task": task}, indent=2))
    return str(directory)


def load_exported(directory: str | os.PathLike, *, shardings: Any = None) -> tuple[Any, Any]:
    """``(model, variables)`` from an :func:`export_params` directory.

    ``shardings``: optional tree of shardings for the variables; by default
    they are restored onto the first local device.
    """
    from jaxmm.models import registry

    directory = storage.as_path(directory)  # absolute; a gs:// URL as it is
    meta_path = directory / "model.json"
    if not meta_path.exists() or not (directory / "variables").exists():
        raise FileNotFoundError(
            f"{directory} is not a jaxmm params export (needs model.json and variables/); "
            "create one with jaxmm.train.export_params or a training run's workdir/export."
        )
    meta = json.loads(meta_path.read_text())
    model = registry.build(meta["model"], meta["config"])
    ckpt = ocp.StandardCheckpointer()
    abstract = ckpt.metadata(directory / "variables").item_metadata.tree
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    target = jax.tree.map(lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s),
                          abstract, shardings)
    return model, ckpt.restore(directory / "variables", target)


# ---------------------------------------------------------------------------
# Any folder
# ---------------------------------------------------------------------------


def load_model(path: str | os.PathLike) -> tuple[Any, Any]:
    """``(model, params)`` from a Hugging Face folder, a jaxmm model folder, a
    params export, or a training workdir with an ``export/``."""
    from jaxmm.convert.native import MODEL_FILE

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Model folder {path!r} does not exist.")
    if os.path.exists(os.path.join(path, MODEL_FILE)):
        from jaxmm.convert.native import load_converted

        model, params, _ = load_converted(path)
        return model, params
    if os.path.exists(os.path.join(path, "config.json")):
        from jaxmm.convert import from_hf

        model, params, _ = from_hf(path)
        return model, params
    for folder in (path, os.path.join(path, "export")):
        if os.path.exists(os.path.join(folder, "model.json")):
            model, variables = load_exported(folder)
            return model, variables["params"] if "params" in variables else variables
    raise FileNotFoundError(
        f"{path} is not a Hugging Face model folder (config.json + model.safetensors), a jaxmm "
        f"model folder ({MODEL_FILE} + params.safetensors) or a jaxmm params export "
        "(model.json + variables/, or a workdir with export/).")
