"""The live providers' one GET: a single deadline over the whole request, nothing left after it.

A raw server on 127.0.0.1 answers one byte at a time, a byte every 0.2 s: each read succeeds
well inside any per-read socket timeout, so only a deadline over the whole request (headers and
body) can end it. The bound asserted is the documented one, ``timeout + ABORT_GRACE``, plus a
fixed allowance for a loaded test machine; what is left afterwards is checked with
``threading.enumerate()`` and the process's own TCP connections (psutil).
"""

from __future__ import annotations

import socket
import threading
import time

import psutil
import pytest

from carbon_callbacks.intensity import ENV_VARS, lookup_country
from carbon_callbacks.intensity.live import ElectricityMaps, LiveError, get_json
from carbon_callbacks.intensity.live.http import ABORT_GRACE

TOKEN = "em-test-token-9a8b7c"
SLACK = 0.5
"""Seconds allowed on top of the documented bound for a busy shared test machine."""

SERVER_LIFETIME = 15.0
"""Every test server stops itself after this long, whatever the test does."""


class TrickleServer:
    """A 127.0.0.1 HTTP server that sends its answer slowly; bounded loops, stops itself.

    Args:
        phase: ``"headers"`` trickles the whole answer from the status line on; ``"body"``
            sends the headers at once and trickles the body.
        interval: Seconds between bytes.
        status_line: First line of the answer (``"HTTP/1.1 302 Found"`` with ``headers``
            naming a ``Location`` for a redirect).
    """

    def __init__(
        self,
        phase: str = "body",
        interval: float = 0.2,
        status_line: str = "HTTP/1.1 200 OK",
        headers: dict[str, str] | None = None,
        body: bytes = b'{"carbonIntensity": 123.0}' + b" " * 400,
    ) -> None:
        self.phase = phase
        self.interval = interval
        head = [status_line, "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.head = ("\r\n".join(head) + "\r\n\r\n").encode()
        self.body = body
        self.requests: list[bytes] = []
        self.bytes_sent = 0
        self.client_gone = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, name="trickle-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        ends = time.monotonic() + SERVER_LIFETIME
        try:
            while not self._stop.is_set() and time.monotonic() < ends:
                try:
                    conn, _ = self._listener.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    self._answer(conn, ends)
        finally:
            self._listener.close()

    def _answer(self, conn: socket.socket, ends: float) -> None:
        conn.settimeout(1.0)
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            request += chunk
        self.requests.append(request)
        slow = self.head + self.body
        if self.phase == "body":
            conn.sendall(self.head)
            slow = self.body
        for i in range(len(slow)):  # bounded by the answer's length
            if self._stop.is_set() or time.monotonic() > ends:
                return
            try:
                conn.sendall(slow[i : i + 1])
            except OSError:
                self.client_gone.set()
                return
            self.bytes_sent += 1
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


@pytest.fixture
def trickle(request):
    servers: list[TrickleServer] = []

    def make(**kwargs) -> TrickleServer:
        server = TrickleServer(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def request_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("carbon-callbacks-intensity")]


def client_sockets_to(port: int) -> list:
    """This process's TCP connections whose far end is ``port`` (the server side is excluded)."""
    return [
        c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port
    ]


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_answer_is_cut_at_the_deadline_and_leaves_nothing(trickle, phase):
    server = trickle(phase=phase)
    timeout = 0.6
    started = time.monotonic()
    with pytest.raises(LiveError) as caught:
        get_json(f"{server.url}/v3/latest", {"auth-token": TOKEN}, timeout)
    elapsed = time.monotonic() - started
    assert caught.value.cause == "timeout"
    assert timeout <= elapsed <= timeout + ABORT_GRACE + SLACK, elapsed
    # The server was still sending: only the deadline, not the answer's end, stopped the read.
    assert 0 < server.bytes_sent < len(server.head) + len(server.body)
    assert request_threads() == []
    assert client_sockets_to(server.port) == []
    # Our side closed the connection: the server's next byte finds nobody.
    assert server.client_gone.wait(2.0)


def test_a_provider_behind_a_trickling_server_falls_back_within_its_deadline(trickle, caplog):
    server = trickle(phase="body")
    source = ElectricityMaps("DE", token=TOKEN, base_url=f"{server.url}/v3", timeout=0.5)
    now = time.time()
    started = time.monotonic()
    g, provenance = source.intensity_at(now - 10, now)
    elapsed = time.monotonic() - started
    assert elapsed <= 0.5 + ABORT_GRACE + SLACK, elapsed
    assert g == pytest.approx(lookup_country("DE").g_per_kwh)
    assert "timeout" in provenance
    assert request_threads() == []
    assert client_sockets_to(server.port) == []
    assert TOKEN not in caplog.text


def test_a_fast_answer_is_read_whole_and_leaves_nothing(trickle):
    server = trickle(phase="body", interval=0.0, body=b'{"carbonIntensity": 123.0}')
    assert get_json(f"{server.url}/x", {}, 2.0) == {"carbonIntensity": 123.0}
    assert request_threads() == []
    assert client_sockets_to(server.port) == []


def test_a_redirect_to_another_port_is_refused_and_the_token_never_leaves(trickle):
    elsewhere = trickle(phase="body", interval=0.0, body=b'{"carbonIntensity": 1.0}')
    server = trickle(
        phase="body",
        interval=0.0,
        status_line="HTTP/1.1 302 Found",
        headers={"Location": f"{elsewhere.url}/v3/latest"},
        body=b"",
    )
    with pytest.raises(LiveError) as caught:
        get_json(f"{server.url}/v3/latest", {"auth-token": TOKEN}, 2.0)
    assert caught.value.cause == "HTTP 302 redirect refused"
    assert f"127.0.0.1:{elsewhere.port}" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(server.requests) == 1 and TOKEN.encode() in server.requests[0]
    assert elsewhere.requests == []
    assert request_threads() == []


def test_a_redirect_to_another_scheme_on_the_same_host_is_refused(trickle):
    server = trickle(
        phase="body",
        interval=0.0,
        status_line="HTTP/1.1 301 Moved Permanently",
        headers={"Location": "https://127.0.0.1/v3/latest"},
        body=b"",
    )
    with pytest.raises(LiveError, match="redirect refused"):
        get_json(f"{server.url}/v3/latest", {"auth-token": TOKEN}, 2.0)


def test_a_redirect_loop_on_the_same_origin_ends(trickle):
    server = trickle(
        phase="body",
        interval=0.0,
        status_line="HTTP/1.1 307 Temporary Redirect",
        headers={"Location": "/again"},
        body=b"",
    )
    with pytest.raises(LiveError) as caught:
        get_json(f"{server.url}/start", {}, 2.0)
    assert caught.value.cause == "too many redirects"
    assert len(server.requests) == 6  # the first request and five redirects
    assert request_threads() == []


def test_a_refused_connection_fails_at_once_and_leaves_nothing():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    started = time.monotonic()
    with pytest.raises(LiveError) as caught:
        get_json(f"http://127.0.0.1:{port}/", {}, 2.0)
    assert caught.value.cause == "connection failed"
    assert time.monotonic() - started < 1.0
    assert request_threads() == []


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "2"])
def test_a_deadline_that_is_not_a_positive_number_is_refused(timeout):
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        get_json("http://127.0.0.1:1/", {}, timeout)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        ElectricityMaps("DE", token=TOKEN, timeout=timeout)


def test_a_lightning_fit_with_a_trickling_provider_ends_with_nothing_left(trickle, tmp_path):
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from carbon_callbacks.integrations.lightning import CarbonCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8
    )
    server = trickle(phase="body")
    source = ElectricityMaps("DE", token=TOKEN, base_url=f"{server.url}/v3", timeout=0.4)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[CarbonCallback(intensity=source, ledger=False)],
        logger=False,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), data)
    assert trainer.current_epoch == 2
    assert len(server.requests) >= 1  # the provider was asked, and answered too slowly
    assert source.requests == len(server.requests)
    assert request_threads() == []
    assert client_sockets_to(server.port) == []
