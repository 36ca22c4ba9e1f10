"""jaxmm's exception family and the exit status of each kind of failure.

Every error jaxmm raises on purpose derives from :class:`JaxmmError`, which
carries the exit status the command line returns for it (``exit_code``) and,
optionally, the fix (``hint``). The classes that existed before this family
keep their old bases too (``ConfigError`` is still a ``ValueError``), so code
that catches ``ValueError`` or ``RuntimeError`` keeps working::

    try:
        config = load_run_config("configs/x.py")
    except JaxmmError as e:        # or ValueError
        print(e, e.exit_code)

The ``jaxmm`` command prints one line for any of them, ``jaxmm <command>:
error: <message>``, and exits with ``exit_code`` (see the README's table of
exit codes). This module is the bottom of the house: it imports nothing from
jaxmm.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CHECKPOINT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "CheckpointError",
    "ConfigError",
    "ConversionError",
    "DataError",
    "InputError",
    "JaxmmError",
    "NonFiniteError",
    "TokenizerError",
    "did_you_mean",
    "edit_distance",
    "nearest",
]

# The exit statuses of every `jaxmm` command (README: "Exit codes").
EXIT_OK = 0  # finished, or stopped cleanly on a preemption notice (a checkpoint was saved)
EXIT_FAILED = 1  # training diverged (NaN/Inf), or an internal error (a bug: please report it)
EXIT_BAD_INPUT = 2  # bad command line, config, data, tokenizer, model folder or file
EXIT_CHECKPOINT = 3  # no usable checkpoint: none in the workdir, none readable, or incompatible
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report 128 + 2


class JaxmmError(Exception):
    """Base class of jaxmm's errors.

    Args:
      message: what is wrong, and where (a file, a config key, a path).
      hint: the fix, when it is not already part of ``message``; ``str(error)``
        is the message followed by the hint.

    Class attribute ``exit_code``: the status ``jaxmm`` exits with.
    """

    exit_code: ClassVar[int] = EXIT_BAD_INPUT

    def __init__(self, message: str = "", *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        end = "" if self.message.rstrip().endswith((".", "?", "!", ":")) else "."
        return f"{self.message.rstrip()}{end} {self.hint}"

    def __reduce__(self):  # keep the hint across pickling (multiprocessing, pytest-xdist)
        return _rebuild, (type(self), self.message, self.hint)


def _rebuild(cls: type[JaxmmError], message: str, hint: str | None) -> JaxmmError:
    error = cls.__new__(cls)
    JaxmmError.__init__(error, message, hint=hint)
    return error


class ConfigError(JaxmmError, ValueError):
    """A configuration is invalid: unknown key, bad value or bad file."""


class InputError(JaxmmError, ValueError):
    """An argument is unusable: a prompt longer than the model's context, a path
    that is a file where a folder is needed, a value out of range."""


class DataError(JaxmmError, ValueError):
    """A dataset is missing, empty, corrupt or not usable as configured."""


class TokenizerError(JaxmmError, ValueError):
    """A tokenizer cannot be loaded, trained or applied; the message says why."""


class ConversionError(JaxmmError, ValueError):
    """A checkpoint cannot be converted; the message says why and what to do."""


class CheckpointError(JaxmmError, RuntimeError):
    """No usable checkpoint: the workdir has none, none of them can be read, or
    they were written by a different model. Nothing in the workdir was changed."""

    exit_code: ClassVar[int] = EXIT_CHECKPOINT


class NonFiniteError(JaxmmError, RuntimeError):
    """Training produced NaN/Inf; the message names the step and the metrics."""

    exit_code: ClassVar[int] = EXIT_FAILED


# ---------------------------------------------------------------------------
# Nearest-name hints ("Did you mean 'num_layers'?")
# ---------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment (Damerau-Levenshtein) distance: insertions,
    deletions, substitutions and swaps of two neighbouring characters cost 1."""
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], before[j - 2] + 1)
        before, previous = previous, row
    return previous[-1]


def nearest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` close to ``name``, closest first.

    Close means an :func:`edit_distance` (ignoring case) of at most one edit per
    three characters of ``name`` (at least one edit), and fewer edits than
    either word has characters, so a short word is never "close" to an
    unrelated one. Ties go to the candidate whose length is nearer, then to the
    earlier one. Nothing close gives ``[]``: leave the hint out then.
    """
    name = str(name)
    budget = max(1, round(len(name) / 3))
    scored = []
    for index, candidate in enumerate(dict.fromkeys(str(c) for c in candidates)):
        if candidate == name:
            continue
        distance = edit_distance(name.lower(), candidate.lower())
        if distance <= budget and distance < min(len(name), len(candidate)):
            scored.append((distance, abs(len(candidate) - len(name)), index, candidate))
        elif distance == 0:  # differs only in case
            scored.append((0, 0, index, candidate))
    return [c for *_, c in sorted(scored)[:n]]


def did_you_mean(name: str, candidates: Iterable[str], *, prefix: str = "") -> str:
    """``" Did you mean 'a', 'b'?"`` naming the candidates close to ``name`` (each
    shown with ``prefix``), or ``""`` when none is: never an empty question."""
    close = nearest(name, candidates)
    return f" Did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""
