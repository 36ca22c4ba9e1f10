"""A fake Google Cloud Storage for tests: gcp-storage-emulator, in memory, on localhost.

:func:`fake_gcs` starts the emulator (its JSON API, in a thread of this process,
objects in memory) with one bucket and returns the environment that points every
client jaxmm's ``gs://`` paths go through at it:

* ``STORAGE_EMULATOR_HOST``: gcsfs, which etils.epath uses for ``gs://`` when
  ``EPATH_USE_TF=false``. epath's default client for ``gs://``, ``tf.io.gfile``,
  has the GCS endpoint compiled in (``https://www.googleapis.com/storage/v1/``),
  so it cannot be pointed at a fake; these tests run epath's fsspec client.
* ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: gcsfs otherwise asks the Storage
  Control gRPC API (which the emulator does not have) for each bucket's layout.
* ``TENSORSTORE_GCS_HTTP_URL`` and ``GOOGLE_AUTH_TOKEN_FOR_TESTING``: TensorStore's
  GCS driver, which writes the arrays of Orbax checkpoints.

The bucket is a real object store for the clients: no folders, no appends, no
renames (gcsfs copies and deletes), listings by prefix.

One gap of the emulator is filled in (:func:`_send_generation_headers`): real GCS
answers a media download with the object's ``x-goog-generation`` header, which
TensorStore needs to read an OCDBT manifest back ("Malformed StorageGeneration"
without it); the emulator does not send it. The emulator also ignores write
preconditions (``ifGenerationMatch``), which a single writer never trips.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send_generation_headers() -> None:
    """Makes the emulator's media downloads carry ``x-goog-generation``, as GCS's do."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    if getattr(objects.download, "sends_generation", False):
        return
    plain = objects.download

    def download(request, response, storage, *args, **kwargs):
        plain(request, response, storage, *args, **kwargs)
        if response.status.value < 300:
            obj = storage.get_file_obj(request.params["bucket_name"],
                                       request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

    download.sends_generation = True
    objects.download = download  # objects.get(alt=media) calls it by this name
    for _, methods in server.HANDLERS:
        for method, handler in list(methods.items()):
            if handler is plain:
                methods[method] = download


@contextlib.contextmanager
def fake_gcs(bucket: str = "jaxmm-test") -> Iterator[dict[str, str]]:
    """Runs the emulator with ``bucket``; yields the environment for its clients."""
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s are normal
    _send_generation_headers()
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield {
            "STORAGE_EMULATOR_HOST": url,
            "EPATH_USE_TF": "false",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",
        }
    finally:
        server.stop()


def gcs_listing(env: dict[str, str], prefix: str) -> dict[str, bytes]:
    """``{object name under prefix: content}``, read with a fresh gcsfs client (no cache)."""
    from gcsfs.core import GCSFileSystem  # the plain client, whatever gcsfs's env says

    fs = GCSFileSystem(endpoint_url=env["STORAGE_EMULATOR_HOST"], token="anon",
                             skip_instance_cache=True, use_listings_cache=False)
    root = prefix.removeprefix("gs://").rstrip("/")
    return {name[len(root) + 1:]: fs.cat_file(name) for name in fs.find(root)}
