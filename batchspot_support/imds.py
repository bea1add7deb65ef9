"""The EC2 instance metadata service (IMDSv2) on loopback, for hosts that Spot reclaims.

Each simulated host is a path prefix of one server (``endpoint(host)`` is what a worker gets
as ``AWS_EC2_METADATA_SERVICE_ENDPOINT``). As on EC2, a session token comes from ``PUT
/latest/api/token`` and every read must carry it; ``spot/instance-action`` answers 404 until
the host is given notice, then the action and its time (EC2 user guide, "Spot Instance
interruption notices").
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

TOKEN = "imds-token"
NOTICE_PATH = "/latest/meta-data/spot/instance-action"


class InstanceMetadata:
    """IMDSv2 for any number of hosts; a host is reclaimed by :meth:`notify`."""

    def __init__(self) -> None:
        """Start serving on a free loopback port."""
        self.token_requests = 0
        self._notices: dict[str, bytes] = {}
        self._lock = threading.Lock()
        metadata = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                with metadata._lock:
                    metadata.token_requests += 1
                self._reply(200, TOKEN.encode())

            def do_GET(self) -> None:
                host, _, path = self.path.lstrip("/").partition("/")
                with metadata._lock:
                    notice = metadata._notices.get(host)
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    self._reply(401, b"")
                elif "/" + path == NOTICE_PATH and notice is not None:
                    self._reply(200, notice)
                else:
                    self._reply(404, b"")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def endpoint(self, host: str) -> str:
        """Return the metadata endpoint a worker on ``host`` is given."""
        return f"http://127.0.0.1:{self._port}/{host}/"

    def notify(self, host: str, seconds: float) -> None:
        """Serve ``host`` a Spot interruption notice: terminated in ``seconds`` from now."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
        with self._lock:
            self._notices[host] = json.dumps({"action": "terminate", "time": when}).encode()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> InstanceMetadata:
        """Serve for the block."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self.close()
