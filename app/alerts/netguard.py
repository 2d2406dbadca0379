"""Where an alert webhook may go: the server-side request forgery guard.

Any editor of an org can set a webhook URL and our servers then call it, so without a guard
ClickPulse could be made to call loopback services, the private network or the cloud metadata
service. Two layers read the host through one `normalise_host`: `check_url` at save time (no
DNS lookup), and `GuardedBackend` at send time, the real defence, which resolves the host
itself, refuses any non-public address and connects only to the addresses it vetted (no
rebinding). The rules are in docs/alerts.md, section "Webhook targets (SSRF guard)"."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import typing
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# 80 and 443, and every unprivileged port (receivers on :8080, :8443, :9000 ... are common).
# Refused: 1-1023 except 80/443 — SSH, SMTP, POP/IMAP, DNS, LDAP and the like are what a
# cross-protocol request would aim at.
ALLOWED_PORTS_NOTE = "80, 443 or 1024-65535"


def port_allowed(port: int) -> bool:
    return port in (80, 443) or 1024 <= port <= 65535


# Names that only mean something on the machine or its local network.
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_LOCAL_SUFFIXES = (
    ".localhost",
    ".localdomain",
    ".local",
    ".internal",  # metadata.google.internal, *.ec2.internal, ...
    ".intranet",
    ".lan",
    ".home.arpa",
    ".in-addr.arpa",
    ".ip6.arpa",
)
# What inet_aton accepts besides dotted quads: 127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.I)

# NAT64 well-known prefix: the last 32 bits are an IPv4 address the gateway will reach.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(httpcore.ConnectError):
    """The webhook host is (or resolves to) an address we refuse to connect to."""


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why `ip` is not a webhook target (`None`: it is a public address, or a private one
    that `allow_private` permits)."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        problem = address_problem(inner, allow_private=allow_private)
        return f"{problem}, {inner} embedded in IPv6" if problem else None
    # Never allowed, even on a self-hosted install: nothing legitimate listens there.
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_link_local:
        return "link-local address (cloud metadata lives here)"
    if ip.is_multicast:
        return "multicast address"
    if ip.is_reserved and not ip.is_loopback:
        return "reserved address"
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast address"
    if allow_private:
        return None
    if ip.is_loopback:
        return "loopback address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local address"
    if ip.is_private:
        return "private address"
    if not ip.is_global:  # 100.64.0.0/10 (carrier-grade NAT) and whatever else is not global
        return "non-public address"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """`host` as an IP address, in any spelling a resolver would accept, else None."""
    h = host.strip("[]")
    if "%" in h:  # an IPv6 zone id: fe80::1%eth0
        h = h.split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


# A host name once normalised: dot-separated labels of letters, digits, '-' and '_' (seen in
# real DNS names), each 1-63 long.
_HOST_NAME = re.compile(r"^[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*$")
# A last label that is a number: the host is an IPv4 address or nothing (as browsers parse it).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def normalise_host(host: str) -> str:
    """The one spelling of a URL host that both checks use (save time and send time), or
    ValueError when it is not a host at all.

    IPv6 (bracketed or not) → its compressed form; an IPv4 address in any spelling a resolver
    accepts (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.000.000.001`) → dotted quad; a name →
    lower case, IDNA (so full-width digits and the ideographic full stop become what the
    resolver will see), without the one trailing dot of its absolute form. Refused: white
    space, `%` (zone ids, escapes), empty labels (`a..b`, `127.0.0.1..`), any other character a
    host name cannot hold, and a name whose last label is a number that is not an IPv4 address.
    """
    h = host
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
        if ":" not in h:
            raise ValueError("brackets hold an IPv6 address")
    if ":" in h:
        if "%" in h:
            raise ValueError("an IPv6 zone id is not a webhook target")
        try:
            return str(ipaddress.IPv6Address(h))
        except ValueError as exc:
            raise ValueError(f"not an IPv6 address: {exc}") from None
    h = h.lower()
    if not h.isascii():
        try:
            h = h.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValueError(f"not a valid international name: {exc}") from None
    if h.endswith("."):
        h = h[:-1]  # `example.com.` is the absolute spelling of `example.com`
    if not _HOST_NAME.match(h):
        raise ValueError("holds characters or empty labels a host name cannot have")
    if _NUMERIC_LABEL.match(h.rsplit(".", 1)[-1]):
        ip = parse_ip_literal(h)
        if ip is None:
            raise ValueError("ends in a number but is not an IPv4 address")
        return str(ip)
    return h


def host_problem(host: str, *, allow_private: bool = False) -> str | None:
    """Why the URL host `host` is refused without resolving it (`None`: acceptable)."""
    try:
        name = normalise_host(host)
    except ValueError as exc:
        return f"{host!r} is not a valid host ({exc})"
    ip = parse_ip_literal(name)
    if ip is not None:
        problem = address_problem(ip, allow_private=allow_private)
        return f"{ip} is non-public ({problem})" if problem else None
    if allow_private:
        return None
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return f"{name} is a local-only host name"
    if "." not in name:
        return f"{name} is a single-label (local network) host name"
    return None


def check_url(url: str, *, allow_private: bool = False) -> str | None:
    """Why `url` cannot be a webhook target (`None`: acceptable at save time)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http:// or https:// URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not contain a user name or password"
    if port is not None and not port_allowed(port):
        return f"port {port} is not allowed (use {ALLOWED_PORTS_NOTE})"
    try:
        normalise_host(parts.hostname)
    except ValueError as exc:
        return f"the host {parts.hostname!r} is not valid: {exc}"
    problem = host_problem(parts.hostname, allow_private=allow_private)
    if problem:
        return f"must point at a public address: {problem}"
    return None


# -- send time ------------------------------------------------------------------------------


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to. A seam: looked up as a module global at call time,
    so tests may monkeypatch `app.alerts.netguard.resolve_host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    out: list[str] = []
    for *_, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr not in out:
            out.append(addr)
    return out


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, vets every address, then connects to a
    vetted address literally (no second resolution)."""

    def __init__(self, *, allow_private: bool = False, inner: Any = None):
        self.allow_private = allow_private
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not port_allowed(port):
            raise BlockedAddress(f"refused: port {port} is not allowed ({ALLOWED_PORTS_NOTE})")
        # The same normalisation as at save time: a host check_url would refuse is refused here.
        try:
            name = normalise_host(host)
        except ValueError as exc:
            raise BlockedAddress(f"refused: {host!r} is not a valid host ({exc})") from None
        literal = parse_ip_literal(name)
        try:
            with anyio.fail_after(timeout):
                if literal is not None:
                    addresses = [str(literal)]
                else:
                    try:
                        addresses = await resolve_host(name, port)
                    except OSError as exc:
                        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
                if not addresses:
                    raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
                vetted: list[str] = []
                for addr in addresses:
                    ip = parse_ip_literal(addr)
                    problem = (
                        "unparseable address"
                        if ip is None
                        else address_problem(ip, allow_private=self.allow_private)
                    )
                    if problem:
                        raise BlockedAddress(
                            f"refused: {host} resolves to {addr}, non-public ({problem})"
                            if literal is None
                            else f"refused: {addr} is non-public ({problem})"
                        )
                    vetted.append(str(ip))
                last: Exception | None = None
                for addr in vetted:
                    try:
                        return await self.inner.connect_tcp(
                            addr,
                            port,
                            timeout=timeout,
                            local_address=local_address,
                            socket_options=socket_options,
                        )
                    except httpcore.ConnectError as exc:
                        last = exc
                assert last is not None
                raise last
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host} timed out") from exc

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("refused: unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool built on `GuardedBackend`.

    httpx (0.28) has no public `network_backend` argument, so the pool httpx built is replaced
    by an identical one with our backend; the request/response and exception mapping stay
    httpx's own. No proxy (env proxies would vet the proxy, not the target)."""

    def __init__(self, *, allow_private: bool = False, limits: httpx.Limits | None = None):
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx changed: AsyncHTTPTransport._pool is not a connection pool")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),  # honours SSL_CERT_FILE/DIR
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private=allow_private),
        )


def blocked_reason(exc: BaseException) -> str | None:
    """The refusal message when an httpx error was caused by `BlockedAddress`."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, BlockedAddress):
            return str(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
