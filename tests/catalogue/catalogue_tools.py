"""The bad-input catalogue's tools: running ``jaxmm`` as a user does (a subprocess) or
in-process, the checks every case makes, and workdir snapshots (the fixtures that use
them are in this folder's conftest.py).

Every case asserts the exit code, a keyword of the message, that exactly one
``jaxmm <command>: error:`` line is printed and no traceback, and, when it ran
against an existing workdir, that the workdir's files are byte-identical afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from tests.train.helpers import ROOT, cpu_env, snapshot

# A hang guard only: nothing here is timed (a quiet run of the slowest case takes ~10 s).
HANG_GUARD_S = 1800



@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_jaxmm(*args: str, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = ()) -> Outcome:
    """``python -m jaxmm ARGS`` from the repository root, as a user runs it (8 CPU
    devices; ``JAXMM_DEBUG`` unset unless ``env`` sets it). ``prefix``: a command that
    wraps it (``unshare ...``)."""
    full_env = cpu_env(8)
    full_env.pop("JAXMM_DEBUG", None)
    full_env.update(env or {})
    proc = subprocess.run([*prefix, sys.executable, "-m", "jaxmm", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def run_inprocess(capsys, *args: str) -> Outcome:
    """``jaxmm.cli.main(ARGS)`` in this process, with its output captured."""
    from jaxmm import cli

    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def assert_fails(outcome: Outcome, code: int, *keywords: str, command: str | None = None
                 ) -> str:
    """The run exited with ``code`` and printed one error line holding every keyword
    (case-insensitive), and no traceback; returns that line."""
    assert outcome.code == code, (outcome.code, outcome.err[-3000:])
    assert "Traceback" not in outcome.err, outcome.err[-3000:]
    lines = [line for line in outcome.err.splitlines()
             if line.startswith("jaxmm ") and ": error: " in line]
    assert len(lines) == 1, outcome.err[-3000:]
    line = lines[0]
    if command is not None:
        assert line.startswith(f"jaxmm {command}: error: "), line
    for keyword in keywords:
        assert keyword.lower() in line.lower(), (keyword, line)
    assert "did you mean ?" not in line.lower() and "did you mean '?" not in line.lower()
    return line


def assert_untouched(folder: str, before: dict[str, str]) -> None:
    """Every file of ``folder`` is as in ``before``: none added, removed or changed
    (``config.json`` included: a failed run leaves the workdir's record alone)."""
    after = snapshot(folder)
    keep = set(before) | set(after)
    changed = sorted(p for p in keep if before.get(p) != after.get(p))
    assert not changed, f"changed in {folder}: {changed[:10]}"
    assert any(p.startswith("checkpoints" + os.sep) for p in before)  # it held a run


def namespaces_work() -> bool:
    """Whether ``unshare -rm`` (a private mount namespace, root mapped in a user
    namespace) works here, so a test can mount a tmpfs or a read-only bind mount
    that no other process sees."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                           timeout=HANG_GUARD_S)
    return probe.returncode == 0
