"""The transport of the Google stand-ins: a loopback HTTP server that answers JSON.

Google's REST APIs answer `application/json` bodies, errors included
(https://cloud.google.com/apis/design/errors, "HTTP Mapping"); the stand-ins answer the same way.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with a JSON body.

    Every method goes to `answer(method)`; one a subclass does not take is answered 501, as
    BaseHTTPRequestHandler answers a method it has no `do_<METHOD>` for
    (python/cpython Lib/http/server.py@v3.11.7, handle_one_request).
    """

    def answer(self, method: str) -> None:
        self.send_error(501, f"Unsupported method ({method!r})")

    def do_GET(self) -> None:
        self.answer("GET")

    def do_POST(self) -> None:
        self.answer("POST")

    def do_PATCH(self) -> None:
        self.answer("PATCH")

    def do_PUT(self) -> None:
        self.answer("PUT")

    def do_DELETE(self) -> None:
        self.answer("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the stand-ins record calls themselves."""

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(server: ThreadingHTTPServer) -> str:
    """Serve `server` from a daemon thread; its base URL."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"
