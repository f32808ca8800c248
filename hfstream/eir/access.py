"""Who may open a connection: the HTTP upgrade's path, Host, Origin and token checks.

Each check answers before the WebSocket upgrade, with an HTTP status and a body that names the
flag that would let the request in:

* **Host** (DNS rebinding). A web page can point a DNS name it controls at 127.0.0.1; the
  browser then sends ``Host`` and ``Origin`` naming that domain, so comparing the two proves
  nothing. The Host must name this server: a loopback name or address, the bound address, an
  ``--allow-host`` value, or, on a non-loopback bind, any IP address (a browser sends an IP
  literal only when the page's own address is that IP, which cannot be rebound) or this
  machine's host name. A server that requires a token accepts any Host there: a rebinding page
  cannot present the token (browsers send no ``Authorization`` on WebSockets and the page does
  not know it). The port is not compared: tunnels and port mappings change it legitimately.
* **Origin** (cross-site WebSocket hijacking): a browser's Origin must match the Host, or be
  an ``--allow-origin`` value. Non-browser clients (EIR) send none, or their own host.
* **Token**: ``?token=`` (raw as pasted, ``+ / =`` included, or percent-encoded) or
  ``Authorization: Bearer``. ``+`` is not read as a space: a base64 token works as pasted.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status and body it gets, and the line the log gets."""

    status: int
    body: str
    reason: str


class AccessPolicy:
    """The checks of one server.

    Args:
        path: the WebSocket endpoint's path.
        bind_host: the interface the server listens on (``--host``).
        token: the shared secret, or None for none.
        allowed_origins: browser origins let in besides the server's own (``*``: any).
        allowed_hosts: Host names let in besides the automatic ones (``*``: any).
    """

    def __init__(self, path: str, bind_host: str, token: str | None = None,
                 allowed_origins: tuple[str, ...] = (), allowed_hosts: tuple[str, ...] = ()):
        self.path, self.token = path, token
        self.allowed_origins = allowed_origins
        self.any_host = "*" in allowed_hosts
        self.public = not is_loopback(bind_host)
        names = {_normal(h) for h in allowed_hosts if h != "*"} | {_normal(bind_host)}
        if self.public:
            names.add(_normal(socket.gethostname()))
        self.host_names = frozenset(names)

    def check(self, target: str, headers) -> Refusal | None:
        """None when the upgrade request (``target``: path and query; ``headers``) may proceed."""
        url = urlsplit(target)
        if url.path != self.path:
            return Refusal(404, f"no WebSocket endpoint at {url.path}; connect to {self.path}\n",
                           f"path {url.path[:100]!r}")
        for name in ("Host", "Origin", "Authorization"):  # which one would count is ambiguous
            if len(headers.get_all(name)) > 1:
                return Refusal(400, f"the request has more than one {name} header\n", f"{name} header repeated")
        host = headers.get("Host")
        if host is None:
            return Refusal(400, "the request has no Host header (HTTP/1.1 requires one)\n", "no Host header")
        if not self.host_allowed(host):
            name = split_host(host)[0][:100]
            return Refusal(403, f"Host {host[:100]!r} does not name this server, so the request is refused "
                                f"(DNS rebinding protection). If clients reach the server under that name, "
                                f"start it with --allow-host {name}\n", f"Host {host[:100]!r} is not allowed")
        origin = headers.get("Origin")
        if (origin is not None and urlsplit(origin).netloc.lower() != host.lower()
                and origin not in self.allowed_origins and "*" not in self.allowed_origins):
            return Refusal(403, "cross-origin WebSocket connections are refused (see the server's "
                                "--allow-origin)\n", f"cross-origin request from {origin[:100]}")
        if self.token is not None:
            return self._check_token(url.query, headers.get("Authorization", ""))
        return None

    def host_allowed(self, host: str) -> bool:
        """Whether a Host header value (``name``, ``name:port``, ``[v6]:port``) names this server."""
        if self.any_host:
            return True
        name, _ = split_host(host)
        if not name:
            return False
        address = _ip(name)
        if is_loopback(name) or _normal(name) in self.host_names:
            return True
        if address is not None and address.is_unspecified:  # 0.0.0.0 and :: reach this machine too
            return True
        if self.public:
            return self.token is not None or address is not None
        return False

    def _check_token(self, query: str, authorization: str) -> Refusal | None:
        given, via = query_value(query, "token"), "the URL"
        if not given and authorization.lower().startswith("bearer "):
            given, via = authorization[7:].strip(), "the Authorization header"
        if not given:
            return Refusal(401, "this server requires a token and none was sent: add ?token=TOKEN to the URL "
                                "or send 'Authorization: Bearer TOKEN'\n", "no token")
        # As pasted (a raw base64 '+' stays '+'), or percent-decoded ('%2B' -> '+').
        expected = self.token.encode()
        if not any(hmac.compare_digest(candidate.encode(), expected) for candidate in {given, unquote(given)}):
            return Refusal(401, "the token sent does not match this server's token (a token may be pasted "
                                "raw, '+', '/' and '=' included, or percent-encoded)\n",
                           f"wrong token ({len(given)} characters, in {via})")
        return None


def query_value(query: str, key: str) -> str | None:
    """The raw (still percent-encoded) value of ``key`` in a query string, or None.

    Unlike ``parse_qs`` it does not turn ``+`` into a space: a token that holds ``+`` works as
    pasted into a URL.
    """
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if sep and unquote(name) == key:
            return value
    return None


def split_host(host: str) -> tuple[str, str]:
    """``(name, port)`` of a Host value; IPv6 brackets are removed, the name keeps its case."""
    host = host.strip()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if host.count(":") > 1:  # an IPv6 address without brackets (not valid in Host, but unambiguous)
        return host, ""
    name, _, port = host.partition(":")
    return name, port


def is_loopback(name: str) -> bool:
    """A loopback name (``localhost``) or address (``127.0.0.0/8``, ``::1``)."""
    if _normal(name) in LOOPBACK_NAMES:
        return True
    address = _ip(name)
    return address is not None and address.is_loopback


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(_normal(name))
    except ValueError:
        return None


def _normal(name: str) -> str:
    """Lower case, no trailing dot (``LOCALHOST.`` is ``localhost``), no IPv6 brackets."""
    return name.strip().strip("[]").rstrip(".").lower()
