"""A careful HTTP client for contributed URLs (``fetch``, ``check-links``, ``verify --online``).

URLs in sources.yaml come from pull requests, so fetching them must not become a way to
reach internal services or to stall CI. :class:`SafeClient` therefore

* accepts only ``http``/``https`` URLs and refuses any host that resolves to a private,
  loopback, link-local, reserved, multicast or otherwise non-global address (IPv4 and
  IPv6, IPv4-mapped included) -- checked for the first URL and again for **every redirect
  hop**, which it follows itself (``allow_redirects=False``);
* uses connect and read timeouts, retries timeouts, connection errors and 5xx answers
  with exponential backoff, honours ``429``/``503`` ``Retry-After`` (seconds or an HTTP
  date, capped), waits a minimum interval between requests to the same host, and stops
  reading a body at a size cap.

``allow_loopback`` lets 127.0.0.1 and ::1 through and exists for tests (the hidden
``--allow-loopback`` flag); every other non-global address stays refused.
Limitation: the address is checked when the URL is resolved here; a DNS server that
answers differently a moment later (rebinding) is not defended against.
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

from kdalib import __version__

REDIRECT_CODES = (301, 302, 303, 307, 308)
RETRY_CODES = (429, 500, 502, 503, 504)
LOOPBACK_ALLOWED = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


class FetchError(Exception):
    """A URL could not be fetched. ``kind`` is one of: refused, too-large, timeout,
    connection, too-many-redirects, http-status."""

    def __init__(self, url: str, kind: str, message: str, status: int | None = None):
        self.url = url
        self.kind = kind
        self.status = status
        super().__init__(f"{url}: {message}")


@dataclass
class FetchPolicy:
    """Limits for one client; the defaults suit a link check over a few dozen sources."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    max_retry_after: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    min_interval: float = 1.0
    max_redirects: int = 5
    allow_loopback: bool = False
    user_agent: str = f"kdalib/{__version__} (source checker of the Kimi field guide)"


@dataclass
class FetchResult:
    """The final (non-redirect) answer: status, headers that matter, body and the hops taken."""

    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes
    redirects: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def address_problem(address: str, allow_loopback: bool) -> str | None:
    """Why ``address`` must not be contacted, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_loopback and ip in LOOPBACK_ALLOWED:
        return None
    # Most specific first: 0.0.0.0 and 240/4 are also "private" to the ipaddress module.
    for label, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                        ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                        ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if flag:
            return f"{label} address {ip}"
    return None if ip.is_global else f"non-global address {ip}"


def check_url_allowed(url: str, allow_loopback: bool = False, resolver: Resolver = resolve_host) -> None:
    """Raise :class:`FetchError` (kind ``refused``) unless ``url`` is http(s) to public addresses only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(url, "refused", f"scheme {parts.scheme or '(none)'!r} is not allowed (only http, https)")
    host = parts.hostname
    if not host:
        raise FetchError(url, "refused", "the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError(url, "refused", "the URL has an invalid port") from None
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as err:
            raise FetchError(url, "connection", f"cannot resolve {host}: {err}") from None
    if not addresses:
        raise FetchError(url, "connection", f"{host} resolves to no address")
    for address in addresses:
        problem = address_problem(address, allow_loopback)
        if problem:
            raise FetchError(url, "refused", f"refusing to connect to {host}: {problem}")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a Retry-After header (delta seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class SafeClient:
    """GET with the guarantees listed in the module docstring.

    Args:
        policy: limits (timeouts, retries, size cap, rate limit, loopback for tests).
        session: a ``requests.Session`` to reuse (a new one by default).
        sleep / clock: injectable for tests of backoff and rate limiting.
        resolver: host → addresses, injectable for tests of the address checks.
    """

    def __init__(self, policy: FetchPolicy | None = None, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 resolver: Resolver = resolve_host):
        self.policy = policy or FetchPolicy()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = self.policy.user_agent
        self.sleep = sleep
        self.clock = clock
        self.resolver = resolver
        self._last_request: dict[str, float] = {}

    def get(self, url: str, read_body: bool = True) -> FetchResult:
        """Fetch ``url``, following redirects hop by hop; 4xx/5xx come back as a result, not an error.

        Raises:
            FetchError: refused address or scheme, timeout or connection failure after the
                retries, a body over the size cap, or too many redirects.
        """
        current = url
        redirects: list[tuple[int, str]] = []
        for _hop in range(self.policy.max_redirects + 1):
            check_url_allowed(current, self.policy.allow_loopback, self.resolver)
            response = self._request_with_retries(current)
            location = response.headers.get("Location")
            if response.status_code in REDIRECT_CODES and location:
                response.close()
                redirects.append((response.status_code, urljoin(current, location)))
                current = redirects[-1][1]
                continue
            with response:
                body = self._read_capped(current, response) if read_body else b""
            return FetchResult(url, current, response.status_code,
                               response.headers.get("Content-Type", ""), body, redirects)
        raise FetchError(url, "too-many-redirects", f"more than {self.policy.max_redirects} redirects")

    def _wait_for_host(self, url: str) -> None:
        host = urlsplit(url).netloc
        last = self._last_request.get(host)
        if last is not None:
            delay = last + self.policy.min_interval - self.clock()
            if delay > 0:
                self.sleep(delay)
        self._last_request[host] = self.clock()

    def _request_with_retries(self, url: str) -> requests.Response:
        policy = self.policy
        for attempt in range(policy.retries + 1):
            last_try = attempt == policy.retries
            self._wait_for_host(url)
            try:
                response = self.session.get(url, stream=True, allow_redirects=False,
                                            timeout=(policy.connect_timeout, policy.read_timeout))
            except requests.Timeout:
                if last_try:
                    raise FetchError(url, "timeout", f"no answer within the timeout after {attempt + 1} tries") from None
            except requests.RequestException as err:
                if last_try:
                    raise FetchError(url, "connection", f"{type(err).__name__}: {err}") from None
            else:
                if response.status_code not in RETRY_CODES or last_try:
                    return response
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                response.close()
                if wait is not None:
                    self.sleep(min(wait, policy.max_retry_after))
                    continue
            self.sleep(policy.backoff * (2 ** attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read_capped(self, url: str, response: requests.Response) -> bytes:
        cap = self.policy.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise FetchError(url, "too-large", f"the body is {declared} bytes, over the {cap}-byte cap")
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > cap:
                    raise FetchError(url, "too-large", f"the body exceeds the {cap}-byte cap")
                chunks.append(chunk)
        except requests.RequestException as err:
            raise FetchError(url, "timeout" if isinstance(err, requests.Timeout) else "connection",
                             f"reading the body failed: {err}") from None
        return b"".join(chunks)
