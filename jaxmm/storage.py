"""Where runs are stored: local folders and object-store URLs (``gs://bucket/run``) alike.

Every read and write of a workdir (``config.json``, ``metrics.jsonl``,
``summary.json``, ``eval_<step>.json``, ``export/``, ``tensorboard/``, the
Orbax checkpoints) goes through :mod:`etils.epath`, the path library Orbax
itself uses, so a workdir may be a local folder or a ``gs://`` URL:

* a local path is made absolute (:func:`resolve`); a URL is kept as it is
  (``os.path.abspath("gs://b/r")`` would turn it into the local folder
  ``./gs:/b/r``);
* epath picks the client: ``tf.io.gfile`` when TensorFlow is importable (it
  always is with jaxmm) unless ``EPATH_USE_TF=false``, else fsspec
  (``gcsfs`` for ``gs://``: ``pip install 'jaxmm[gcs]'``). Orbax writes the
  arrays of a ``gs://`` checkpoint with TensorStore's own GCS client;
* object stores cannot append to or rename an object in place, so
  :func:`write_text` uploads a whole object (an upload replaces the object
  atomically: a reader sees the old or the new one), while local files are
  written to a temporary file and renamed, as before; a growing text file
  (``metrics.jsonl``) is a :class:`TextLog`: appended to locally, rewritten
  whole from its in-memory copy on an object store.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time

from etils import epath

from jaxmm.errors import InputError

__all__ = ["URL_SCHEMES", "TextLog", "as_path", "exists", "is_dir", "is_url", "listdir",
           "makedirs", "read_text", "remove", "resolve", "write_text"]

# Object stores a workdir may be in: epath and Orbax's TensorStore both write
# gs://; epath's other schemes need clients jaxmm does not test (s3://, az://) or
# are read-only (hf://).
URL_SCHEMES = ("gs",)
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return _URL.match(os.fspath(path)) is not None


def resolve(path: str | os.PathLike, option: str = "path") -> str:
    """``path`` as jaxmm stores it: an absolute local path, or the URL unchanged
    (without a trailing ``/``). Raises :class:`InputError` for a URL scheme
    jaxmm cannot write to, and when the client it needs is not installed."""
    text = os.fspath(path)
    match = _URL.match(text)
    if match is None:
        return os.path.abspath(text)
    scheme = match.group(1).lower()
    if scheme not in URL_SCHEMES:
        raise InputError(f"{option} {text!r}: jaxmm cannot store files at a {scheme}:// URL.",
                         hint="Use a local path or a gs://BUCKET/FOLDER URL.")
    if not text[len(match.group(0)):].split("/")[0]:
        raise InputError(f"{option} {text!r} names no bucket.",
                         hint=f"Pass {scheme}://BUCKET/FOLDER.")
    _check_client(scheme)
    return text.rstrip("/")


def as_path(path: str | os.PathLike) -> epath.Path:
    """The :class:`etils.epath.Path` of ``path`` (a URL stays a URL)."""
    return epath.Path(resolve(path))


def _check_client(scheme: str) -> None:
    """One clear line when epath would need gcsfs and it is not installed."""
    uses_tf = os.environ.get("EPATH_USE_TF", "").lower() not in ("false", "no", "f", "0")
    if uses_tf and importlib.util.find_spec("tensorflow") is not None:
        return  # epath uses tf.io.gfile
    if importlib.util.find_spec("gcsfs") is None:
        raise InputError(f"{scheme}:// paths need gcsfs when epath does not use TensorFlow "
                         "(EPATH_USE_TF=false), and it is not installed.",
                         hint="pip install 'jaxmm[gcs]', or unset EPATH_USE_TF.")


def read_text(path: str | os.PathLike) -> str:
    """The text of a file or object (``FileNotFoundError`` if there is none)."""
    return epath.Path(path).read_text()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` so that readers see the old content or the new, never a part:
    a local file through a temporary file renamed over it, an object in one upload."""
    if is_url(path):
        epath.Path(path).write_text(text)
        return
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class TextLog:
    """A text file that grows at its end (``metrics.jsonl``).

    A local file is appended to on every :meth:`append`, as ``open(path, "a")``
    does. An object cannot be appended to, so for a URL the whole text is kept in
    memory (read once, at the first :meth:`append`) and uploaded whole, at most
    every ``upload_secs`` seconds and on :meth:`flush`; the caller flushes at each
    checkpoint and at the end, so the object holds every record up to the last
    checkpoint.
    """

    def __init__(self, path: str | os.PathLike, *, upload_secs: float = 30.0):
        self.path = os.fspath(path)
        self.url = is_url(self.path)
        self.upload_secs = upload_secs
        self._text: str | None = None  # URL: the whole text
        self._dirty = False
        self._uploaded = time.monotonic()

    def append(self, text: str) -> None:
        if not self.url:
            with open(self.path, "a") as f:
                f.write(text)
            return
        if self._text is None:
            p = epath.Path(self.path)
            self._text = p.read_text() if p.exists() else ""
        self._text += text
        self._dirty = True
        if time.monotonic() - self._uploaded >= self.upload_secs:
            self.flush()

    def flush(self) -> None:
        if self.url and self._dirty and self._text is not None:
            epath.Path(self.path).write_text(self._text)
            self._dirty = False
            self._uploaded = time.monotonic()


def exists(path: str | os.PathLike) -> bool:
    return epath.Path(path).exists()


def is_dir(path: str | os.PathLike) -> bool:
    return epath.Path(path).is_dir()


def makedirs(path: str | os.PathLike) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str | os.PathLike) -> list[str]:
    """Names in a folder (``[]`` if it does not exist)."""
    p = epath.Path(path)
    return sorted(c.name for c in p.iterdir()) if p.is_dir() else []


def remove(path: str | os.PathLike) -> None:
    epath.Path(path).unlink()
