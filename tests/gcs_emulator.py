"""A throwaway Google Cloud Storage for tests: `gcp-storage-emulator`, in memory, in a
subprocess on a free loopback port. Nothing it stores touches the local disk.

    with gcs_emulator("test-bucket") as gcs:
        epath.Path(f"gs://{gcs.bucket}/run/config.json").write_text("{}")
        subprocess.run([sys.executable, "train.py", "--workdir", f"gs://{gcs.bucket}/run"],
                       env={**os.environ, **gcs.env}, timeout=600)

`gcs.env` holds the variables that point every client the project uses at the emulator,
without credentials; they are also set in `os.environ` while the block runs (restored
after), so child processes inherit them. Run as a script, this file is the emulator.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import select
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import fsspec

_HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Emulator:
    bucket: str
    url: str  # http://127.0.0.1:PORT
    env: dict[str, str]


def emulator_env(url: str) -> dict[str, str]:
    """The environment that sends gcsfs (etils.epath's gs:// backend), tensorstore (Orbax's
    arrays) and google-cloud-storage (Orbax's bucket checks) to the emulator at `url`."""
    host = url.split("://", 1)[1]
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage (anonymous then)
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore's `gcs` kvstore
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: skip credential lookup
        "FSSPEC_GS_TOKEN": "anon",  # gcsfs: no credential lookup (fsspec reads it at import)
        # etils.epath: gs:// through fsspec/gcsfs, not tf.io.gfile (whose GCS endpoint is fixed)
        "EPATH_USE_TF": "false",
        # gcsfs: the plain HTTP filesystem (read at import); the default one asks for each
        # bucket's layout over gRPC, which the emulator lacks (a minute of retries per call)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        # google-auth: no GCE metadata server probe; should any client still look for one
        # (google-auth, tensorstore, TF), it finds the emulator on loopback: not GCE
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": host,
        "GCE_METADATA_ROOT": host,
        "GCE_METADATA_IP": host,
    }


def _clear_client_caches() -> None:
    """etils.epath caches its backend choice and its gcsfs filesystem, fsspec its
    instances: cleared, they are made anew from the environment of the moment."""
    from etils.epath import backend, gpath

    gpath._is_tf_installed.cache_clear()
    backend.fsspec_backend._get_filesystem.cache_clear()
    fsspec.get_filesystem_class("gs").clear_instance_cache()


@contextlib.contextmanager
def gcs_emulator(bucket: str = "test-bucket", timeout: float = 30.0) -> Iterator[Emulator]:
    """Starts the emulator with an empty `bucket`, yields an `Emulator`, and always stops
    it. Enter it before this process first imports gcsfs (the variables decide its class)."""
    proc = subprocess.Popen([sys.executable, __file__, bucket], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    saved_environ, saved_conf = dict(os.environ), copy.deepcopy(fsspec.config.conf)
    env: dict[str, str] = {}
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        port = proc.stdout.readline().strip() if ready else ""
        if not port:
            raise RuntimeError(f"the GCS emulator did not start within {timeout} s "
                               f"(exit code {proc.poll()})")
        url = f"http://{_HOST}:{port}"
        with urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=timeout) as reply:
            reply.read()  # the bucket is there (an HTTPError otherwise)
        env = emulator_env(url)
        os.environ.update(env)
        fsspec.config.set_conf_env(fsspec.config.conf)  # FSSPEC_* is read at import
        if fsspec.get_filesystem_class("gs").__name__ != "GCSFileSystem":
            raise RuntimeError("gcsfs was imported before gcs_emulator() set "
                               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false")
        _clear_client_caches()
        yield Emulator(bucket=bucket, url=url, env=env)
    finally:
        try:
            if env:
                for name in env:
                    if name in saved_environ:
                        os.environ[name] = saved_environ[name]
                    else:
                        os.environ.pop(name)
                fsspec.config.conf.clear()
                fsspec.config.conf.update(saved_conf)
                _clear_client_caches()
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()  # the emulator exits at the end of its input
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    proc.stdout.close()


def _serve(bucket: str) -> None:
    """Serves an in-memory store with `bucket` until stdin closes; prints the port.

    Two additions make it behave like GCS where the project's clients need it: downloads
    carry `x-goog-generation` (tensorstore's conditional writes, e.g. Orbax's OCDBT
    manifest, fail with "Malformed StorageGeneration" without it), and the objects `moveTo`
    call exists (gcsfs renames with it and retries the emulator's 501 for ~30 s)."""
    import functools
    import logging
    import threading
    from http import HTTPStatus
    from http.server import HTTPServer

    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import buckets, objects
    from gcp_storage_emulator.storage import Storage

    logging.disable(logging.CRITICAL)
    plain_download = objects.download

    def download(request, response, storage, *args, **kwargs):
        plain_download(request, response, storage)
        if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
            obj = storage.get_file_obj(request.params["bucket_name"],
                                       request.params["object_id"])
            response["x-goog-generation"] = obj["generation"]

    def move(request, response, storage, *args, **kwargs):
        request.params["dest_bucket_name"] = request.params["bucket_name"]
        objects.copy(request, response, storage)
        if response.status == HTTPStatus.OK:
            storage.delete_file(request.params["bucket_name"], request.params["object_id"])

    objects.download = download  # also what objects.get serves `?alt=media` with
    move_route = (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
                  r"/moveTo/o/(?P<dest_object_id>.*[^/]+)$")
    server.HANDLERS = ((move_route, {"POST": move}),) + tuple(
        (route, {verb: download if handler is plain_download else handler
                 for verb, handler in handlers.items()})
        for route, handlers in server.HANDLERS)

    class Server(HTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], ConnectionError):  # gcsfs drops races
                super().handle_error(request, client_address)

    storage = Storage(use_memory_fs=True)
    buckets.create_bucket(bucket, storage)
    httpd = Server((_HOST, 0), functools.partial(server.RequestHandler, storage))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(httpd.server_port, flush=True)
    sys.stdin.read()
    httpd.shutdown()


if __name__ == "__main__":
    _serve(sys.argv[1])
