"""One bounded GET for the live providers: one deadline over DNS, connect, TLS, headers, body.

An epoch end asks a provider at most once per source, so the whole request (not each socket
operation) must end by a deadline: a server trickling one byte a second would otherwise keep a
socket timeout from ever firing. The request runs in one short-lived thread; at the deadline the
caller shuts its socket, which ends any blocked read at once, and joins the thread. What the
caller can wait for is therefore ``timeout + ABORT_GRACE`` seconds at most, and once it returns
no socket of the request is open and its thread has ended.

The one part no socket shutdown can interrupt is the system resolver (``getaddrinfo`` ignores
timeouts). A host name that takes longer than the deadline to resolve still returns control to
the caller at the deadline; the resolving thread is left to finish (it is a daemon and holds no
socket of ours), and it never connects once the deadline has passed.

Redirects are followed only within the same scheme, host and port: the request headers carry
the Electricity Maps token, and urllib's own handler would copy them to any host a ``Location``
names, over plain http too.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

MAX_BODY = 1_000_000
"""Bytes: the providers' answers are a few kB; anything larger is not an answer to this GET."""

MAX_REDIRECTS = 5
ABORT_GRACE = 0.25
"""Seconds the caller waits, after the deadline, for the request thread to see its socket shut."""

_REDIRECTS = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class LiveError(Exception):
    """A provider request failed; ``cause`` is a short label used to warn once per cause."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}{': ' + detail if detail else ''}")
        self.cause = cause


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of a URL, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a malformed port in a Location header
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def check_timeout(timeout: object) -> float:
    """Validate a request deadline in seconds.

    Raises:
        ValueError: Not a positive finite number.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < float("inf")
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def get_json(url: str, headers: Mapping[str, str], timeout: float) -> Any:
    """GET ``url`` and decode its JSON answer, all of it within ``timeout`` seconds.

    Args:
        url: Full ``http`` or ``https`` URL (no secrets in it: tokens go in ``headers``).
        headers: Request headers.
        timeout: Deadline in seconds for the whole request: DNS, connect, TLS, headers, body
            and any same-origin redirects.

    Returns:
        The decoded JSON.

    Raises:
        LiveError: With cause ``timeout``, ``HTTP <code>``, ``HTTP <code> redirect refused``
            (a redirect to another scheme, host or port, which would carry the headers
            there), ``connection failed`` or ``malformed response``. Messages never include
            header values.
    """
    request = _Request(headers, check_timeout(timeout))
    worker = threading.Thread(
        target=request.run, args=(url,), name="carbon-callbacks-intensity-http", daemon=True
    )
    worker.start()
    worker.join(max(0.0, request.deadline - time.monotonic()))
    if worker.is_alive():
        request.abort()
        worker.join(ABORT_GRACE)
        raise request.timed_out()
    if request.error is not None:
        raise request.error
    try:
        return json.loads(request.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LiveError("malformed response", "not JSON") from exc


class _Request:
    """The state one GET shares between its thread and the caller that may abort it."""

    def __init__(self, headers: Mapping[str, str], timeout: float) -> None:
        self.headers = dict(headers)
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.body = b""
        self.error: LiveError | None = None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._aborted = False

    def timed_out(self) -> LiveError:
        return LiveError("timeout", f"no answer within {self.timeout:g} s")

    def abort(self) -> None:
        """Called by the caller at the deadline: shut the socket so any blocked read ends now."""
        with self._lock:
            self._aborted = True
            sock = self._sock
        if sock is not None:
            # socket.socket's own shutdown, also for a TLS socket: it acts on the descriptor
            # without touching the TLS state the request thread may be using.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def run(self, url: str) -> None:
        try:
            self.body = self._follow(url)
        except LiveError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - any failure is a failed request, never a crash
            self.error = self._classify(exc)
        finally:
            self._drop()

    def _classify(self, exc: Exception) -> LiveError:
        if self._aborted or isinstance(exc, TimeoutError):
            return self.timed_out()
        return LiveError("connection failed", type(exc).__name__)

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left

    def _hold(self, sock: socket.socket) -> None:
        """Make ``sock`` the one ``abort()`` shuts; refuse it if the deadline already passed."""
        with self._lock:
            if self._aborted:
                sock.close()
                raise self.timed_out()
            self._sock = sock

    def _drop(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _follow(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = self._get_once(url)
            if status in _REDIRECTS and location:
                target = urljoin(url, location)
                if origin(target) != origin(url):
                    # Name where it pointed (scheme, host, port; never the query) so the user
                    # can fix the base URL; the token is in no part of this message.
                    scheme, host, port = origin(target)
                    where = f"{scheme}://{host}" + (
                        f":{port}" if port != _DEFAULT_PORTS.get(scheme) else ""
                    )
                    raise LiveError(
                        f"HTTP {status} redirect refused",
                        f"the server sent the request to another origin ({where}); set the "
                        "provider's base URL to it if you trust it",
                    )
                url = target
                continue
            if not 200 <= status < 300:
                raise LiveError(f"HTTP {status}")
            return body
        raise LiveError("too many redirects", f"more than {MAX_REDIRECTS}")

    def _get_once(self, url: str) -> tuple[int, str | None, bytes]:
        import http.client  # only a configured provider ever pays for it

        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise LiveError("connection failed", f"unsupported scheme {scheme!r}")
        _, host, port = origin(url)
        if not host or port is None or port < 0:
            raise LiveError("connection failed", "no host or port in the URL")
        sock = self._connect(host, port)
        if scheme == "https":
            sock = self._tls(sock, host)
        conn = http.client.HTTPConnection(host, port)
        conn.sock = sock  # ours, already connected under the deadline
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rpartition("@")[2]
        response = None
        try:
            sock.settimeout(self._remaining())
            conn.request(
                "GET", path, headers={**self.headers, "Host": netloc, "Connection": "close"}
            )
            sock.settimeout(self._remaining())
            response = conn.getresponse()
            sock.settimeout(self._remaining())
            body = response.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise LiveError("malformed response", f"answer larger than {MAX_BODY} bytes")
            return response.status, response.getheader("Location"), body
        finally:
            # The response's file object holds its own reference to the socket: close it too,
            # or the descriptor outlives the request.
            if response is not None:
                response.close()
            conn.close()
            self._drop()

    def _connect(self, host: str, port: int) -> socket.socket:
        # Unbounded by any socket timeout; the caller's deadline covers it (see module doc).
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        last: Exception = LiveError("connection failed", "no address")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            self._hold(sock)
            try:
                sock.settimeout(self._remaining())
                sock.connect(address)
            except OSError as exc:
                last = exc
                self._drop()
                continue
            return sock
        raise last

    def _tls(self, sock: socket.socket, host: str) -> socket.socket:
        import ssl

        context = ssl.create_default_context()
        tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        self._hold(tls)  # wrap_socket took over the descriptor; abort() must shut this one
        tls.settimeout(self._remaining())
        tls.do_handshake()
        return tls
