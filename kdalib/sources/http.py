"""A careful HTTP client for contributed URLs (``fetch``, ``check-links``, ``verify --online``).

URLs in sources.yaml come from pull requests, so fetching them must not become a way to
reach internal services or to stall CI. :class:`SafeClient` therefore

* parses each URL once (:func:`kdalib.sources.urls.split_url`, which refuses ambiguous
  authorities: credentials, backslashes, percent-encoded or malformed hosts, zone ids);
* resolves the host itself (through an injectable resolver), refuses it when **any** of
  its addresses is not public (:func:`kdalib.sources.addresses.address_problem`: not global,
  or wrapping an address that is not, as 6to4, NAT64, Teredo and IPv4-mapped forms do), then
  connects to exactly one of the addresses it checked: the connection is pinned to that IP, with the URL's host in the
  ``Host`` header and, for https, as the TLS server name and the name the certificate must
  match. A DNS answer that changes between the check and the connection (rebinding) is
  never used;
* does all of this again for **every redirect hop**, which it follows itself;
* uses connect and read timeouts and a deadline for the whole fetch (every hop, retry,
  wait and the body read), retries timeouts, connection errors and 5xx answers with
  exponential backoff, honours ``429``/``503`` ``Retry-After`` (seconds or an HTTP date,
  capped), waits a minimum interval between requests to the same host, and stops reading
  a body at a size cap (counted after any content decoding).

Proxy settings from the environment are not used: the connection goes to the checked address.
``allow_loopback`` lets 127.0.0.1 and ::1 through and exists for tests (the hidden
``--allow-loopback`` flag); every other non-global address stays refused.

One part per job: :func:`check_url_allowed` (where may we connect), :class:`_Deadline` (the
fetch's clock and its waits), :class:`_HostSpacing` (the rate limit per host),
:func:`_send_with_retries` (retries, backoff, Retry-After), :func:`_connect` (the pinned
connection), :func:`_read_capped` (the body under its size cap), and :meth:`SafeClient.get`,
which follows redirects hop by hop through them.
"""

from __future__ import annotations

import email.utils
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import certifi
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from kdalib import __version__
from kdalib.sources.addresses import Resolver, address_problem, resolve_host
from kdalib.sources.urls import UrlError, UrlParts, redact, split_url

REDIRECT_CODES = (301, 302, 303, 307, 308)
RETRY_CODES = (429, 500, 502, 503, 504)


class FetchError(Exception):
    """A URL could not be fetched. ``kind`` is one of: refused, too-large, timeout,
    connection, too-many-redirects, http-status. ``url`` and the message never show credentials."""

    def __init__(self, url: str, kind: str, message: str, status: int | None = None):
        self.url = redact(url)
        self.kind = kind
        self.status = status
        super().__init__(f"{self.url}: {message}")


@dataclass
class FetchPolicy:
    """Limits for one client; the defaults suit a link check over a few dozen sources.

    ``deadline`` bounds one :meth:`SafeClient.get` as a whole (every hop, retry, wait and
    the body read), so a server that trickles bytes cannot hold a fetch longer than that.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 120.0
    retries: int = 3
    backoff: float = 1.0
    max_retry_after: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    min_interval: float = 1.0
    max_redirects: int = 5
    allow_loopback: bool = False
    ca_certs: str = field(default_factory=certifi.where)
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


@dataclass(frozen=True)
class Target:
    """A URL that may be contacted: its parts and the checked addresses to connect to."""

    parts: UrlParts
    addresses: tuple[str, ...]


def check_url_allowed(url: str, allow_loopback: bool = False, resolver: Resolver = resolve_host) -> Target:
    """Parse ``url``, resolve its host and check every address; the result says where to connect.

    Raises:
        FetchError: kind ``refused`` for a URL that breaks a rule or reaches a non-public
            address, ``connection`` when the host does not resolve.
    """
    try:
        parts = split_url(url)
    except UrlError as err:
        raise FetchError(url, "refused", err.problem) from None
    if parts.ip is not None:
        addresses = [str(parts.ip)]
    else:
        try:
            addresses = list(resolver(parts.host, parts.port))
        except (OSError, UnicodeError) as err:
            raise FetchError(url, "connection", f"cannot resolve {parts.host}: {err}") from None
    if not addresses:
        raise FetchError(url, "connection", f"{parts.host} resolves to no address")
    for address in addresses:
        problem = address_problem(address, allow_loopback)
        if problem:
            raise FetchError(url, "refused", f"refusing to connect to {parts.host}: {problem}")
    return Target(parts, tuple(str(ipaddress.ip_address(a)) for a in addresses))


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


class _Deadline:
    """The end of one fetch on the client's clock, and the waits that may not pass it."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], None], seconds: float):
        self.clock = clock
        self.sleep = sleep
        self.seconds = seconds
        self.end = clock() + seconds

    def remaining(self, url: str) -> float:
        """Seconds left; raises :class:`FetchError` (kind ``timeout``) once the deadline has passed."""
        left = self.end - self.clock()
        if left <= 0:
            raise self.error(url)
        return left

    def wait(self, seconds: float, url: str) -> None:
        """Sleep ``seconds``, or fail at once when that would end past the deadline."""
        if seconds >= self.remaining(url):
            raise self.error(url)
        self.sleep(seconds)

    def error(self, url: str) -> FetchError:
        return FetchError(url, "timeout", f"the fetch did not finish within its {self.seconds:g}-second deadline")


class _HostSpacing:
    """The minimum interval between two requests to one host, kept across fetches."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def before_request(self, target: Target, interval: float, deadline: _Deadline) -> None:
        host = f"{target.parts.host}:{target.parts.port}"
        last = self._last.get(host)
        delay = 0.0 if last is None else last + interval - deadline.clock()
        if delay > 0:
            deadline.wait(delay, target.parts.url)
        self._last[host] = deadline.clock()


def _send_with_retries(target: Target, policy: FetchPolicy, deadline: _Deadline, spacing: _HostSpacing):
    """The GET with retries: timeouts, connection errors and 5xx/429 answers are tried again
    after an exponential backoff or the server's Retry-After (capped); the last answer is returned."""
    url = target.parts.url
    for attempt in range(policy.retries + 1):
        last_try = attempt == policy.retries
        spacing.before_request(target, policy.min_interval, deadline)
        try:
            pool, response = _connect(target, policy, deadline)
        except NewConnectionError as err:
            if last_try:
                raise FetchError(url, "connection", f"cannot connect: {_reason(err)}") from None
        except Urllib3Timeout:
            deadline.remaining(url)
            if last_try:
                raise FetchError(url, "timeout", f"no answer within the timeout after {attempt + 1} tries") from None
        except (Urllib3Error, OSError) as err:
            if last_try:
                raise FetchError(url, "connection", f"{type(err).__name__}: {_reason(err)}") from None
        else:
            if response.status not in RETRY_CODES or last_try:
                return pool, response
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            response.close()
            pool.close()
            if wait is not None:
                deadline.wait(min(wait, policy.max_retry_after), url)
                continue
        deadline.wait(policy.backoff * (2**attempt), url)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _connect(target: Target, policy: FetchPolicy, deadline: _Deadline):
    """Send the GET to the first checked address that accepts a connection: the connection is
    pinned to that address, with the URL's host as the Host header and the TLS name."""
    parts = target.parts
    headers = {
        "Host": parts.host_header,
        "User-Agent": policy.user_agent,
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "Connection": "close",
    }
    for index, address in enumerate(target.addresses):
        remaining = deadline.remaining(parts.url)
        timeout = urllib3.Timeout(
            connect=min(policy.connect_timeout, remaining), read=min(policy.read_timeout, remaining)
        )
        if parts.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                address,
                parts.port,
                timeout=timeout,
                maxsize=1,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ca_certs=policy.ca_certs,
                server_hostname=parts.host,
                assert_hostname=parts.host,
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, parts.port, timeout=timeout, maxsize=1, retries=False)
        try:
            response = pool.urlopen(
                "GET",
                parts.target,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=True,
                assert_same_host=False,
            )
        except NewConnectionError:
            pool.close()
            if index == len(target.addresses) - 1:
                raise
            continue
        except BaseException:
            pool.close()
            raise
        return pool, response
    raise AssertionError("unreachable: a target has at least one address")


def _read_capped(url: str, response: urllib3.HTTPResponse, policy: FetchPolicy, deadline: _Deadline) -> bytes:
    """The body, read in chunks (each read bounded by the read timeout and the deadline) and
    refused once it passes ``policy.max_bytes`` after content decoding."""
    cap = policy.max_bytes
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise FetchError(url, "too-large", f"the body is {declared} bytes, over the {cap}-byte cap")
    sock = getattr(response.connection, "sock", None)
    chunks, size = [], 0
    while True:
        remaining = deadline.remaining(url)
        if sock is not None:  # each read waits at most the read timeout, and never past the deadline
            sock.settimeout(min(policy.read_timeout, remaining))
        try:
            chunk = response.read1(65536)
        except (TimeoutError, ReadTimeoutError):
            deadline.remaining(url)
            raise FetchError(url, "timeout", "reading the body failed: no data within the read timeout") from None
        except (Urllib3Error, OSError) as err:
            raise FetchError(url, "connection", f"reading the body failed: {_reason(err)}") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise FetchError(url, "too-large", f"the body exceeds the {cap}-byte cap")
        chunks.append(chunk)


class SafeClient:
    """GET with the guarantees listed in the module docstring.

    Args:
        policy: limits (timeouts, deadline, retries, size cap, rate limit, loopback for tests).
        sleep / clock: injectable for tests of backoff and rate limiting.
        resolver: host, port → addresses, injectable so that tests never leave the machine.
    """

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver = resolve_host,
    ):
        self.policy = policy or FetchPolicy()
        self.sleep = sleep
        self.clock = clock
        self.resolver = resolver
        self._spacing = _HostSpacing()

    def get(self, url: str, read_body: bool = True) -> FetchResult:
        """Fetch ``url``, following redirects hop by hop; 4xx/5xx come back as a result, not an error.

        Raises:
            FetchError: refused URL or address, timeout (per read or the whole fetch's deadline)
                or connection failure after the retries, a body over the size cap, or too many
                redirects.
        """
        policy = self.policy
        deadline = _Deadline(self.clock, self.sleep, policy.deadline)
        current = url
        redirects: list[tuple[int, str]] = []
        for _hop in range(policy.max_redirects + 1):
            target = check_url_allowed(current, policy.allow_loopback, self.resolver)
            pool, response = _send_with_retries(target, policy, deadline, self._spacing)
            try:
                location = response.headers.get("Location")
                if response.status in REDIRECT_CODES and location:
                    redirects.append((response.status, urljoin(current, location)))
                    current = redirects[-1][1]
                    continue
                body = _read_capped(current, response, policy, deadline) if read_body else b""
                return FetchResult(
                    url, current, response.status, response.headers.get("Content-Type", ""), body, redirects
                )
            finally:
                response.close()
                pool.close()
        raise FetchError(url, "too-many-redirects", f"more than {policy.max_redirects} redirects")


def _reason(err: BaseException) -> str:
    """A short reason without the library's repr of its connection objects."""
    reason = getattr(err, "reason", None) or err
    text = str(reason)
    return text.split(": ", 1)[-1] if text.startswith("<") else text
