"""One parser for contributed URLs: the schema check and the HTTP client read a URL the same way.

HTTP libraries disagree about odd URLs: ``http://127.0.0.1:80\\@example.org/`` is a
request to example.org for ``urllib.parse`` and to 127.0.0.1 for ``requests``. A URL in
sources.yaml is therefore accepted only when its authority (the part between ``//`` and
the first ``/``, ``?`` or ``#``) is unambiguous:

* ``http`` or ``https`` only;
* no user name or password (``user:pw@host``): credentials never belong in a checklist,
  and an ``@`` is how the host is disguised;
* the host is a DNS name (letters, digits, ``-``, ``_``, dots; international names are
  IDNA-encoded), a dotted IPv4 address or a bracketed IPv6 address without a zone id;
* an optional port of 1 to 5 digits, 1-65535;
* nowhere in the URL: a backslash, whitespace or a control character; in the authority: a
  percent sign or any other character.

:func:`split_url` returns the parts every later step uses (the host that is resolved,
the ``Host`` header, the TLS server name, the request target), so what is checked is what
is contacted. Messages name the URL with any credentials replaced by ``***``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

SCHEMES = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_AUTHORITY = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^\[\]:]+)(?::(?P<port>[0-9]{1,5}))?$")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:/*)([^/?#]*@)")
_FORBIDDEN_ANYWHERE = re.compile(r"[\\\s\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PRINT_LIMIT = 200


class UrlError(ValueError):
    """A URL that is refused before any connection; ``str(err)`` names it (credentials redacted)."""

    def __init__(self, url: str, problem: str):
        self.url = redact(url)
        self.problem = problem
        super().__init__(f"{self.url}: {problem}")


def hide_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of a URL at its start replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text)


def redact(url: str) -> str:
    """``url`` fit to print: credentials hidden, control characters escaped, cut to a readable length."""
    text = hide_credentials(str(url))
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= _PRINT_LIMIT else text[: _PRINT_LIMIT - 3] + "..."


@dataclass(frozen=True)
class UrlParts:
    """A URL that passed :func:`split_url`.

    Attributes:
        url: the URL as given.
        scheme: ``http`` or ``https``.
        host: the host to resolve (IDNA ASCII, lower case; an IP address without brackets).
        port: the port to connect to.
        host_header: the ``Host`` header value (host, plus the port when not the default).
        target: the request target: path (``/`` when empty) and query, percent-encoded.
        ip: the address when the host is an IP literal, else None.
    """

    url: str
    scheme: str
    host: str
    port: int
    host_header: str
    target: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None


def split_url(url: str) -> UrlParts:
    """Parse ``url`` under the rules of the module docstring.

    Raises:
        UrlError: naming the URL and the first rule it breaks.
    """
    if not isinstance(url, str):
        raise UrlError(repr(url), "not a text URL")
    if len(url) > MAX_URL_LENGTH:
        raise UrlError(url, f"the URL is {len(url)} characters long, over the {MAX_URL_LENGTH}-character limit")
    bad = _FORBIDDEN_ANYWHERE.search(url)
    if bad:
        what = "a backslash" if bad.group() == "\\" else f"the character {bad.group()!r}"
        raise UrlError(
            url,
            f"the URL contains {what} at position {bad.start()}; "
            "HTTP libraries read such URLs differently (percent-encode it in the path)",
        )
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise UrlError(url, f"not a URL ({err})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlError(url, f"scheme {parts.scheme or '(none)'!r} is not allowed (only http, https)")
    if not url[len(parts.scheme) + 1 :].startswith("//"):
        raise UrlError(url, "expected '//' after the scheme")
    authority = parts.netloc
    if "@" in authority:
        raise UrlError(url, "the URL carries a user name or password ('...@host'); remove it")
    if "%" in authority:
        raise UrlError(url, "the host part contains '%' (percent-encoding or an IPv6 zone id); write the host plainly")
    match = _AUTHORITY.match(authority)
    if not authority or match is None:
        raise UrlError(url, f"the host part {redact(authority)!r} is not a plain host[:port]")
    host, ip = _host(url, match.group("host"))
    port = int(match.group("port")) if match.group("port") else SCHEMES[scheme]
    if not 0 < port < 65536:
        raise UrlError(url, f"port {port} is out of range")
    shown = f"[{host}]" if isinstance(ip, ipaddress.IPv6Address) else host
    host_header = shown if port == SCHEMES[scheme] else f"{shown}:{port}"
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return UrlParts(url, scheme, host, port, host_header, target, ip)


def _host(url: str, raw: str) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    if raw.startswith("["):
        try:
            return str(ipaddress.IPv6Address(raw[1:-1])), ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise UrlError(url, f"{raw} is not an IPv6 address") from None
    try:
        ascii_host = raw.encode("idna").decode("ascii").lower() if not raw.isascii() else raw.lower()
    except UnicodeError:
        raise UrlError(url, f"the host {raw!r} is not a valid international domain name") from None
    name = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    if re.fullmatch(r"[0-9.]+", name):
        try:
            return name, ipaddress.IPv4Address(name)
        except ValueError:
            raise UrlError(url, f"{raw!r} is not a dotted IPv4 address (four numbers 0-255)") from None
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise UrlError(url, f"the host {raw!r} is not a valid DNS name")
    if name.rsplit(".", 1)[-1].isdigit():
        raise UrlError(url, f"the host {raw!r} ends in a number but is not an IPv4 address")
    return name, None
