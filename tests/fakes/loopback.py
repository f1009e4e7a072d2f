"""A real HTTP server on 127.0.0.1 for the provider packages to talk to: no network, no keys.

Each API module gives ``LoopbackServer`` a route, a function from the recorded request to a
``Reply``; the server records every request so a test can compare what was sent on the wire with
what the span says. Streamed replies are written chunk by chunk on a connection closed at the end,
which every HTTP client here reads as the end of the body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] = ()

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Reply:
        return cls(status, {"content-type": "application/json"}, [json.dumps(payload).encode()])

    @classmethod
    def sse(cls, events: Iterable[tuple[str | None, Any]]) -> Reply:
        """Server-sent events; an event name of None writes a bare ``data:`` line (OpenAI's form),
        a payload that is a str is written as is (``[DONE]``)."""

        def lines() -> Iterable[bytes]:
            for name, payload in events:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                yield ((f"event: {name}\n" if name else "") + f"data: {data}\n\n").encode()

        return cls(200, {"content-type": "text/event-stream"}, lines())

    @classmethod
    def ndjson(cls, objects: Iterable[Any]) -> Reply:
        return cls(200, {"content-type": "application/x-ndjson"}, [json.dumps(o).encode() + b"\n" for o in objects])


Route = Callable[[Request], Reply]


class LoopbackServer:
    """``with LoopbackServer(route) as server: ... server.url ...``"""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                server.requests.append(request)
                try:
                    reply = server.route(request)
                except Exception as error:  # a route bug: answer, so the test fails on the span, not a hang
                    reply = Reply.json({"error": {"message": f"fake server: {error!r}"}}, status=500)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("connection", "close")
                self.end_headers()
                for chunk in reply.chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = "127.0.0.1", self._httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-server", daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def last(self) -> Request:
        assert self.requests, "the provider package sent no request"
        return self.requests[-1]
