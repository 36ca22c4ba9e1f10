"""Published per-chip peaks of Cloud TPU generations, for the compile report's roofline.

Every figure is per chip, from a public source named next to it:

* FLOP/s (bf16 dense) and HBM capacity / bandwidth: the Cloud TPU system
  architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e).
* ICI: one-way bandwidth of one inter-chip link, from "How to Scale Your Model"
  (Austin et al., Google DeepMind 2025, jax-ml.github.io/scaling-book, chapter
  "How to Think About TPUs", table of ICI bandwidths). The roofline assumes a
  collective runs as a bidirectional ring along one torus axis, so a chip moves
  data at ``2 x link`` bytes/s (see :func:`collective_bandwidth`).
"""

from __future__ import annotations

import dataclasses

from jaxmm.config import ConfigError

__all__ = ["CHIPS", "Chip", "chip_for_topology"]

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation's published per-chip peaks.

    name: short name used in topology strings (``v5e``). bf16_flops: dense bf16
    FLOP/s. hbm_bytes: HBM capacity. hbm_bandwidth: HBM bytes/s. ici_link_bandwidth:
    one-way bytes/s of one ICI link. source: where the figures come from.
    """

    name: str
    bf16_flops: float
    hbm_bytes: int
    hbm_bandwidth: float
    ici_link_bandwidth: float
    source: str

    @property
    def collective_bandwidth(self) -> float:
        """Bytes/s a chip sends in a ring collective: both directions of one axis."""
        return 2.0 * self.ici_link_bandwidth


_CLOUD = "cloud.google.com/tpu/docs/{}; ICI: jax-ml.github.io/scaling-book (TPUs chapter)"

CHIPS: dict[str, Chip] = {
    # TPU v4: 275 TFLOP/s bf16, 32 GiB HBM2 at 1,200 GB/s.
    "v4": Chip("v4", 275e12, 32 * GiB, 1.2e12, 4.5e10, _CLOUD.format("v4")),
    # TPU v5e: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s.
    "v5e": Chip("v5e", 197e12, 16 * GiB, 8.19e11, 4.5e10, _CLOUD.format("v5e")),
    # TPU v5p: 459 TFLOP/s bf16, 95 GiB HBM2e at 2,765 GB/s.
    "v5p": Chip("v5p", 459e12, 95 * GiB, 2.765e12, 9e10, _CLOUD.format("v5p")),
    # TPU v6e (Trillium): 918 TFLOP/s bf16, 32 GiB HBM at 1,640 GB/s.
    "v6e": Chip("v6e", 918e12, 32 * GiB, 1.64e12, 9e10, _CLOUD.format("v6e")),
}


def chip_for_topology(topology: str) -> Chip:
    """The chip of a topology name such as ``v5e:4x4`` or ``v5p:2x2x2``."""
    name = topology.split(":", 1)[0].strip().lower()
    if name not in CHIPS:
        raise ConfigError(
            f"Unknown TPU generation {name!r} in topology {topology!r}; known: "
            f"{', '.join(CHIPS)} (e.g. v5e:4x4, v5p:2x2x2, v4:2x2x1, v6e:4x4).")
    return CHIPS[name]
