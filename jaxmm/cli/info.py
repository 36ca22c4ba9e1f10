"""``jaxmm info``: versions and devices."""

from __future__ import annotations

import argparse

from jaxmm.cli.failures import command


@command("jaxmm info")
def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="jaxmm info", description="Versions and devices.").parse_args(
        argv
    )
    import flax
    import jax
    import optax

    import jaxmm

    print(f"jaxmm {jaxmm.__version__}")
    print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}")
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s): {jax.devices()}")
    print(f"processes: {jax.process_count()} (this is {jax.process_index()})")
    return 0
