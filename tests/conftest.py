"""Test setup: 8 simulated CPU devices and a persistent compilation cache.

Must run before JAX is imported anywhere, so it sets XLA_FLAGS at import time.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Where libtpu is installed (.venv-tpu), let every test process load it (no lockfile).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
jax.config.update("jax_compilation_cache_dir", os.path.join(_ROOT, ".cache", "jax-tests"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def rng():
    """A fixed NumPy generator for test inputs."""
    return np.random.default_rng(0)


def pytest_report_header(config):
    return f"jax {jax.__version__}: {jax.device_count()} {jax.default_backend()} devices"


def pytest_collection_modifyitems(config, items):
    """The ``heavy`` tests (a minute or more each) go first: under ``pytest -n 2 --dist
    worksteal`` (make test) they start early and spread over both workers, so the run ends
    on short tests instead of one worker finishing a long job alone. Otherwise the
    collection order is kept (a stable sort)."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


# ---------------------------------------------------------------------------
# jaxmm installed from a wheel (tests/test_install.py, tests/test_notebooks.py)
# ---------------------------------------------------------------------------

# What the wheel is built from (copied out of the checkout, so the build leaves no
# build/ or *.egg-info behind in it).
_WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "jaxmm", "configs")


class InstalledWheel:
    """A virtualenv outside the checkout with jaxmm installed from a wheel (not editable).

    Its dependencies come from the test environment's site-packages, added by a ``.pth``
    line (which puts the folder on ``sys.path`` without running that folder's own ``.pth``
    files, so the test environment's editable jaxmm is not visible): nothing is downloaded.
    """

    def __init__(self, root):
        root = str(root)
        self.root = root
        source = os.path.join(root, "source")
        os.makedirs(source)
        for name in _WHEEL_SOURCES:
            src, dst = os.path.join(_ROOT, name), os.path.join(source, name)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst)
        dist = os.path.join(root, "dist")
        run = dict(check=True, capture_output=True, text=True, timeout=900)  # hang guards
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "--disable-pip-version-check", "-w", dist,
                        source], **run)
        wheels = [f for f in os.listdir(dist) if f.endswith(".whl")]
        assert len(wheels) == 1, wheels
        self.wheel = os.path.join(dist, wheels[0])
        self.venv = os.path.join(root, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", self.venv], **run)
        self.python = os.path.join(self.venv, "bin", "python")
        self.jaxmm = os.path.join(self.venv, "bin", "jaxmm")
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            **run).stdout.strip()
        with open(os.path.join(purelib, "_jaxmm_test_dependencies.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")
        subprocess.run([sys.executable, "-m", "pip", "--python", self.python, "install", "-q",
                        "--no-deps", "--disable-pip-version-check", self.wheel], **run)
        self.site_packages = purelib

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for its commands: no PYTHONPATH (the checkout stays invisible)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory) -> InstalledWheel:
    """jaxmm built as a wheel from this checkout and installed into a fresh venv."""
    return InstalledWheel(tmp_path_factory.mktemp("installed_wheel"))
