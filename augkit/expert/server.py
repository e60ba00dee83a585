"""The expert test's web page, served by the standard library's threading HTTP server.

Routes: ``GET /`` the page (one self-contained HTML file: inline CSS and JS, no external asset),
``GET /api/state``, ``GET /img/<id>`` (PNG by opaque id), ``POST /api/answer`` and ``POST /api/undo``
(JSON bodies ``{"id": ..., "answer": "real"|"fake"}`` / ``{"id": ...}``). Errors are JSON
``{"error": ...}`` with 400 (malformed), 404 (unknown id), 409 (not the current image: a double
click, an old tab), 413 or 415. Nothing served names an image's source, row or file.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files

from augkit.errors import UserError
from augkit.expert.session import AnswerRejected, Session

MAX_BODY = 4096
# the page may talk to this server only: a stray external asset would not even load
CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def page_html() -> bytes:
    return files("augkit.expert").joinpath("page.html").read_bytes()


class ExpertServer(ThreadingHTTPServer):
    """Serves one session; ``on_complete(session)`` runs each time its last image is answered."""

    daemon_threads = True

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 0,
                 on_complete: Callable[[Session], None] | None = None):
        self.session = session
        self.on_complete = on_complete
        self.page = page_html()
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise UserError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); choose another --port") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def start_in_thread(self) -> threading.Thread:
        """For tests and embedding: serve in a daemon thread; stop with ``shutdown()``."""
        thread = threading.Thread(target=self.serve_forever, name="augkit-expert-test", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ExpertServer
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "augkit-expert-test"

    def log_message(self, format, *args):  # noqa: A002 - the page's requests are not news
        pass

    # -- responses -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # -- routes --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        session = self.server.session
        try:
            if path == "/":
                self._send(200, self.server.page, "text/html; charset=utf-8")
            elif path == "/api/state":
                self._json(200, session.state())
            elif path == "/favicon.ico":  # browsers ask for one; there is none, and that is no error
                self._send(204, b"", "image/x-icon")
            elif path.startswith("/img/"):
                body = session.image_path(path[len("/img/"):]).read_bytes()
                self._send(200, body, "image/png", cache="private, max-age=86400, immutable")
            else:
                self._error(404, "no such page")
        except AnswerRejected as exc:
            self._error(exc.status, str(exc))

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path not in ("/api/answer", "/api/undo"):
            self._error(404, "no such action")
            return
        body = self._body()
        if body is None:
            return
        session = self.server.session
        try:
            if path == "/api/answer":  # refused once every image is answered: this one made it done
                state = session.answer(body.get("id"), body.get("answer"))
            else:  # never done after an undo
                state = session.undo(body.get("id"))
        except AnswerRejected as exc:
            self._error(exc.status, str(exc))
            return
        self._json(200, state)
        if state["done"] and self.server.on_complete is not None:
            self.server.on_complete(session)

    def _body(self) -> dict | None:
        """The request's JSON object, or None after sending the error. Requiring a JSON content type
        also makes a browser refuse cross-site form posts to this server."""
        keep_alive, self.close_connection = not self.close_connection, True  # an early error leaves the body unread
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)")
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return None
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
            return None
        try:
            raw = self.rfile.read(length)
            self.close_connection = not keep_alive
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            body = None
        if not isinstance(body, dict):
            self._error(400, "expected a JSON object")
            return None
        return body
