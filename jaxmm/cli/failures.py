"""How every ``jaxmm`` command fails: one line on stderr and a documented exit status.

:func:`report` turns any exception that ends a command into
``jaxmm <command>: error: <what is wrong, where, and the fix>`` and returns the
exit status (the table in :mod:`jaxmm.errors` and the README):

* jaxmm's own errors (:class:`jaxmm.errors.JaxmmError`): their message, their
  ``exit_code`` (2 for bad input, 1 for NaN/Inf, 3 for no usable checkpoint);
* well-known operating-system errors (a missing file, a path that exists, a
  file where a folder is needed, no permission, a full disk, a read-only file
  system) and a refused pickle: what happened to which path and the fix, exit 2;
* any other ``ValueError``: its message (bad input that jaxmm did not
  recognise as such), exit 2;
* anything else, a bug: one line naming the exception, exit 1;
* Ctrl-C: ``interrupted``, exit 130.

With ``debug`` the traceback is printed first. Every command's ``main`` is
wrapped by :func:`command`, so ``jaxmm.cli.<command>.main(argv)`` returns the
exit status (and takes ``--debug``) however it is called.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import pickle
import re
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from jaxmm.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    JaxmmError,
)

__all__ = ["command", "debug_enabled", "describe_os_error", "one_line", "os_error_in_text",
           "quiet_library_tracebacks", "report", "split_debug_flag"]

DEBUG_FLAG = "--debug"
DEBUG_ENV = "JAXMM_DEBUG"
DEBUG_HINT = "rerun with --debug (or JAXMM_DEBUG=1) for the traceback"
_MAX_FOREIGN = 400  # characters kept of a message that is not jaxmm's own


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with its lines joined by spaces (and cut to ``limit`` characters)."""
    joined = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    if limit is not None and len(joined) > limit:
        joined = joined[: limit - 3].rstrip() + "..."
    return joined


def describe_os_error(error: OSError) -> str:
    """What an ``OSError`` means for the path it names, and the fix."""
    path = error.filename
    if error.errno is None or error.strerror is None or path is None:
        return one_line(str(error))  # raised by jaxmm with its own message
    shown = repr(os.fspath(path)) if isinstance(path, str | os.PathLike) else repr(path)
    code = error.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return (f"no space left on the device while writing {shown}. Free some space, or "
                "write to a disk with room (another --workdir or output folder).")
    if code == errno.EROFS:
        return (f"{shown} is on a read-only file system. Write to a writable location "
                "(another --workdir or output folder).")
    if isinstance(error, PermissionError):
        return (f"permission denied for {shown}. Use a location you can write to (or read), "
                "or change its permissions.")
    if isinstance(error, FileNotFoundError):
        return (f"{shown} does not exist. Check the path (relative paths start at "
                f"{os.getcwd()}).")
    if isinstance(error, FileExistsError):
        kind = "a file" if os.path.isfile(path) else "there"
        return (f"{shown} already exists ({kind}) and cannot be created. Choose another path, "
                "or move the existing one away.")
    if isinstance(error, IsADirectoryError):
        return f"{shown} is a folder, but a file is needed here. Pass the path of a file."
    if isinstance(error, NotADirectoryError):
        return (f"{shown}: a part of this path is a file, but a folder is needed here. Pass "
                "a folder (or a new path).")
    second = f" -> {error.filename2!r}" if error.filename2 else ""
    return f"{error.strerror} ({type(error).__name__}, errno {code}): {shown}{second}."


# How TensorStore (Orbax's storage) reports an operating-system error in a message.
_TEXT_ERRNO = re.compile(r"os_error_code='?(\d+)")
_TEXT_PATH = re.compile(r'(?:local file|Failed writing:|Failed to open:?) "([^"]+)"')
_TEXT_STRERROR = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
                  errno.EACCES: "Permission denied", errno.EDQUOT: "Disk quota exceeded"}


def os_error_in_text(text: str) -> OSError | None:
    """The ``OSError`` a library's message reports (TensorStore's ``os_error_code='28'``,
    or "No space left on device"), with the path it names; ``None`` if there is none."""
    code = _TEXT_ERRNO.search(text)
    number = int(code.group(1)) if code else next(
        (n for n, phrase in _TEXT_STRERROR.items() if phrase in text), None)
    if number not in _TEXT_STRERROR:
        return None
    path = _TEXT_PATH.search(text)
    return OSError(number, os.strerror(number), path.group(1) if path else "<unknown path>")


def _message(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for ``error``."""
    if isinstance(error, JaxmmError):
        return one_line(str(error)), error.exit_code
    if isinstance(error, OSError):
        return describe_os_error(error), EXIT_BAD_INPUT
    if isinstance(error, pickle.UnpicklingError):
        return ("refused to unpickle a file: it holds more than plain tensors, and nothing in "
                f"it was run ({one_line(str(error), 200)}). Convert a trusted copy to "
                "safetensors instead."), EXIT_BAD_INPUT
    inner = os_error_in_text(str(error))
    if inner is not None:
        return describe_os_error(inner), EXIT_BAD_INPUT
    text = one_line(str(error), _MAX_FOREIGN)
    name = type(error).__name__
    if isinstance(error, ValueError):
        return f"{text} ({name}; {DEBUG_HINT})", EXIT_BAD_INPUT
    detail = f": {text}" if text else ""
    return f"internal error, {name}{detail}; {DEBUG_HINT}", EXIT_FAILED


def report(prog: str, error: BaseException, *, debug: bool = False) -> int:
    """Prints ``<prog>: error: <message>`` (after the traceback if ``debug``) and
    returns the exit status; Ctrl-C prints ``<prog>: interrupted`` and gives 130."""
    sys.stdout.flush()
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    message, code = _message(error)
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.stderr.flush()
    return code


def quiet_library_tracebacks(prog: str = "jaxmm") -> None:
    """For the rest of the process, errors in libraries' background work print no
    traceback: log records (of every logger and thread) keep their message only, and an
    exception in a thread or an unraisable one (a callback run while the process shuts
    down) prints one line, once per distinct message.

    For the ``jaxmm`` process itself, without ``--debug``: after a failure, Orbax's
    writer threads may still report the same error while the process exits.
    """
    make_record = logging.getLogRecordFactory()

    def without_traceback(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record

    seen: set[str] = set()

    def one_line_once(error: BaseException | None, where: str) -> None:
        line = f"{prog}: {where}: {type(error).__name__}: {one_line(str(error), 200)}"
        if line not in seen:
            seen.add(line)
            print(line, file=sys.stderr)

    logging.setLogRecordFactory(without_traceback)
    sys.unraisablehook = lambda u: one_line_once(u.exc_value, "ignored in a callback")
    threading.excepthook = lambda t: one_line_once(
        t.exc_value, f"error in thread {t.thread.name if t.thread else '?'}")


def split_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (anywhere before a ``--``), and whether it was there."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != DEBUG_FLAG] + argv[end:]
    return kept, len(kept) != len(argv)


def debug_enabled(flag: bool) -> bool:
    """``--debug`` was given, or ``JAXMM_DEBUG`` is set (to anything but 0/false/no/off)."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return flag or env not in ("", "0", "false", "no", "off")


def command(prog: str) -> Callable[[Callable[[list[str]], int | None]],
                                   Callable[[Sequence[str] | None], int]]:
    """Decorates a command's ``run(argv) -> int``: it becomes ``main(argv=None) -> int``
    that takes ``--debug`` anywhere and turns every failure into :func:`report`'s line
    and exit status (argparse's own exits, ``SystemExit``, pass through)."""

    def wrap(run: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(run)
        def main(argv: Sequence[str] | None = None) -> int:
            argv, flag = split_debug_flag(sys.argv[1:] if argv is None else argv)
            try:
                return int(run(argv) or 0)
            except SystemExit:
                raise
            except BaseException as error:  # noqa: BLE001 - the one place failures end
                return report(prog, error, debug=debug_enabled(flag))

        return main

    return wrap
