"""`tests/server_process.py` starts the server it says it started: another process that
takes the port between `free_port()` and the server's bind (other tests start servers
too) is neither mistaken for it, though it answers `/healthz`, nor fatal: the start moves
to a new port. (A run of the whole suite once saw a restarted node's requests answered
401 by another test's server on its port.)"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import httpx

from tests import server_process
from tests.live_server import free_port
from tests.local_site import LocalSite
from tests.server_process import ServerProcess


class Impostor(BaseHTTPRequestHandler):
    """Any server on the port: `/healthz` 200, every other path 401."""

    def do_GET(self) -> None:
        status = 200 if self.path == "/healthz" else 401
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_port_taken_before_the_bind_means_a_new_port_not_the_other_server(tmp_path, monkeypatch):
    with LocalSite(Impostor) as impostor:
        ports = iter([impostor.port])
        monkeypatch.setattr(server_process, "free_port", lambda: next(ports, None) or free_port())
        server = ServerProcess(tmp_path / "data", models={"fake": {"provider": "fake"}})
        try:
            base = server.start()
            assert server.port != impostor.port
            assert "address already in use" in server.output().lower()  # the first start's bind
            r = httpx.get(f"{base}/v1/models", headers=server.headers(), timeout=10)
            assert r.status_code == 200 and r.json()["data"][0]["id"] == "fake"
        finally:
            server.stop()
