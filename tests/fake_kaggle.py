"""A stand-in for Kaggle's download API on 127.0.0.1, so kagglehub can be tested offline.

What kagglehub 1.0.3 does for `dataset_download("owner/name/versions/N")` (read from its
source, kagglehub/http_resolver.py, clients.py, cache.py and kagglesdk):

- With the pinned version complete in its cache (marker <cache>/datasets/owner/name/N.complete
  beside versions/N/) it returns that folder and sends nothing.
- Otherwise it makes ONE API call through kagglesdk's requests Session, with no timeout:
      POST {endpoint}/api/v1/datasets.DatasetApiService/DownloadDataset
      {"ownerSlug": "owner", "datasetSlug": "name", "datasetVersionNumber": N, "raw": false}
  with `Authorization` only when it has credentials (KAGGLE_USERNAME/KAGGLE_KEY,
  ~/.kaggle/kaggle.json, KAGGLE_API_TOKEN, kagglehub.login()); without any it still asks.
  Kaggle answers with a redirect to a signed storage URL, which requests follows (as GET).
  An error comes back as JSON {"code": 403, "message": ...}.
- It streams that zip to <cache>/datasets/owner/name/N.archive with a tqdm bar (sized by
  Content-Length), checks the md5 in `x-goog-hash` if present, unpacks it into versions/N/,
  deletes the archive and writes the marker. With `Accept-Ranges: bytes` and a partial
  archive on disk, it resumes with `Range: bytes=<size>-`.

The endpoint comes from KAGGLE_API_ENVIRONMENT (kagglesdk/kaggle_env.py): "LOCALHOST" is
http://localhost, port 80, fixed. So the fake listens on a free port the system picks and is
reached as an HTTP proxy: with HTTP_PROXY pointing at it (`FakeKaggle.environ()`), requests
sends it every call for http://localhost, storage redirects included. Any number of fakes
(one per test, in any number of test workers) can run at once, and no root is needed.

Modes (`FakeKaggle.mode`): "normal"; "403" and "404" (JSON errors, as Kaggle sends them);
"stall" (reads the API call, never answers); "stall-body" (sends half the zip, then
nothing); "cut" (sends half the zip, then closes); "interrupt" (sends part of the zip, then
delivers SIGINT to the main thread, as Ctrl-C would); "corrupt" (a zip whose last member
fails its CRC); "truncated" (half a zip, served as if whole); "checksum" (a wrong md5).
"""

import base64
import hashlib
import io
import json
import signal
import socket
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

API_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"
CORRUPT_ME = "zz_corrupt_me.txt"  # The member "corrupt" mode damages, stored last.


def make_zip(layout, padding_bytes=0):
    """A zip of tiny images laid out as `layout` says: {"a/b/c.jpg": (r, g, b), "x.csv": "text"}.

    Stored, not deflated (as Kaggle's image archives effectively are), so a damaged byte
    surfaces as a CRC error. `padding_bytes` adds a random file, to make a download long
    enough to interrupt in the middle.
    """
    from PIL import Image

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in layout.items():
            if isinstance(content, str):
                archive.writestr(name, content)
                continue
            pixels = np.zeros((16, 16, 3), np.uint8) + np.array(content, np.uint8)
            image = io.BytesIO()
            Image.fromarray(pixels).save(image, format="JPEG" if name.endswith(".jpg") else "PNG")
            archive.writestr(name, image.getvalue())
        if padding_bytes:
            random = np.random.default_rng(0).integers(0, 256, padding_bytes, np.uint8)
            archive.writestr("padding.bin", random.tobytes())
        archive.writestr(CORRUPT_ME, "A" * 4096)
    return buffer.getvalue()


class FakeKaggle:
    """A threaded HTTP server answering kagglehub's download calls from `archives`.

    archives: {"owner/name/N": zip bytes}. `requests` records every request received as
    (method, path, headers dict, JSON body or None). Use as a context manager, or start()
    and stop(); stop() leaves nothing listening (the "server down" case).
    """

    def __init__(self):
        self.archives = {}
        self.mode = "normal"
        self.requests = []
        self.sent_before_interrupt = 0.8  # Of the zip, in "interrupt" mode.
        self.interrupt_when = None  # Optional callable: wait for it before sending SIGINT.
        self.port = None
        self._release = threading.Event()  # Ends stalled answers at stop().
        self._server = None
        self._main_thread = threading.main_thread().ident

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)  # Any free port.
        self.port = self._server.server_address[1]
        self._server.fake = self
        self._release.clear()
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def environ(self):
        """The variables that send kagglehub's requests for http://localhost to this fake."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": proxy, "http_proxy": proxy,
                "NO_PROXY": "", "no_proxy": ""}

    def stop(self):
        if self._server is not None:
            self._release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def api_calls(self):
        return [request for request in self.requests if request[0] == "POST"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # Do not wait for stalled answers at shutdown.

    def handle_error(self, request, client_address):
        # A client that ends while a keep-alive connection is open resets it (a real
        # server logs nothing for that); anything else is printed as before.
        import sys
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Keep-alive, as Kaggle and storage servers answer.

    def log_message(self, *args):  # Quiet: tests read `requests` instead.
        pass

    @property
    def route(self):
        """The path asked for: as a proxy, the fake is sent whole URLs (http://localhost/...)."""
        return urllib.parse.urlsplit(self.path).path

    def do_POST(self):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"null")
        fake.requests.append(("POST", self.route, dict(self.headers), body))
        if fake.mode == "stall":
            fake._release.wait(60)
            self.close_connection = True
            return
        if fake.mode in ("403", "404") or self.route != API_PATH:
            code = int(fake.mode) if fake.mode in ("403", "404") else 404
            return self._json(code, {"code": code, "message": f"fake Kaggle says {code}"})
        key = f"{body['ownerSlug']}/{body['datasetSlug']}/{body.get('datasetVersionNumber')}"
        if key not in fake.archives:
            return self._json(404, {"code": 404, "message": f"no dataset {key}"})
        self.send_response(302)  # As Kaggle does: to a signed storage URL.
        self.send_header("Location", f"/storage/{key}.zip")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        fake = self.server.fake
        fake.requests.append(("GET", self.route, dict(self.headers), None))
        key = self.route.removeprefix("/storage/").removesuffix(".zip")
        if key not in fake.archives:
            return self._json(404, {"code": 404, "message": "no such object"})
        data = fake.archives[key]
        if fake.mode == "corrupt":  # Same length, the last member's bytes changed.
            data = data.replace(b"A" * 4096, b"B" * 4096)
        elif fake.mode == "truncated":
            data = data[: len(data) // 2]
        md5 = hashlib.md5(b"not this" if fake.mode == "checksum" else data).digest()
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("x-goog-hash", f"md5={base64.b64encode(md5).decode()}")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        try:
            if fake.mode in ("stall-body", "cut", "interrupt"):
                share = fake.sent_before_interrupt if fake.mode == "interrupt" else 0.5
                self.wfile.write(data[start:start + int(len(data) * share)])
                self.wfile.flush()
                if fake.mode == "cut":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fake.mode == "interrupt":
                    self._interrupt(fake)
                fake._release.wait(60)
                self.close_connection = True
                return
            self.wfile.write(data[start:])
        except (BrokenPipeError, ConnectionResetError):  # The client gave up: fine.
            self.close_connection = True

    def _interrupt(self, fake):
        """Press Ctrl-C in the main thread, once the client has had time to save some."""
        deadline = time.monotonic() + 10
        while fake.interrupt_when and not fake.interrupt_when() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not fake.interrupt_when:
            time.sleep(0.3)
        signal.pthread_kill(fake._main_thread, signal.SIGINT)

    def _json(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
