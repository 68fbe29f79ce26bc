"""The client connects only to addresses it checked: ambiguous URLs, pinning, credentials, the deadline.

Every request goes to a server on 127.0.0.1; names such as ``public.example`` are answered by
an injected resolver, so no traffic leaves the machine.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time

import pytest
from sources_fixtures import LocalServer, base_sources, codes

from kdalib.sources.addresses import address_problem
from kdalib.sources.http import FetchError, FetchPolicy, SafeClient, check_url_allowed
from kdalib.sources.links import check_link
from kdalib.sources.urls import UrlError, redact, split_url

PUBLIC = "93.184.215.14"  # a global address that no test ever connects to


def client(resolver=None, **policy) -> SafeClient:
    defaults = {
        "allow_loopback": True,
        "min_interval": 0.0,
        "backoff": 0.0,
        "retries": 0,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
    }
    defaults.update(policy)
    fetcher = SafeClient(FetchPolicy(**defaults))
    fetcher.resolver = resolver or (lambda host, port: pytest.fail(f"must not resolve {host}"))
    return fetcher


def test_backslash_authority_is_refused_before_any_connection(server):
    # urlsplit reads the host as public.example; requests/urllib3 would connect to 127.0.0.1
    url = f"http://127.0.0.1:{server.port}\\@public.example/card.md"
    for allow_loopback in (False, True):
        with pytest.raises(FetchError) as info:
            client(lambda host, port: [PUBLIC], allow_loopback=allow_loopback).get(url)
        assert info.value.kind == "refused" and "backslash" in str(info.value)
    result = check_link(client(lambda host, port: [PUBLIC], allow_loopback=False), "s", url)
    assert result.refused and result.status == "broken"
    assert server.hits == {}


def test_a_redirect_to_an_ambiguous_url_is_refused(server):
    with pytest.raises(FetchError) as info:
        client(lambda host, port: [PUBLIC]).get(server.url("/redirect-backslash"))
    assert info.value.kind == "refused" and "backslash" in str(info.value)
    assert server.hits == {"/redirect-backslash": 1}


def test_the_connection_is_pinned_to_the_checked_address(server):
    calls = []

    def rebinding(host, port):
        calls.append(host)  # a second lookup would answer a private address
        return ["127.0.0.1"] if len(calls) == 1 else ["10.0.0.1"]

    result = client(rebinding).get(f"http://public.example:{server.port}/echo-host")
    assert result.ok and result.body == f"Host: public.example:{server.port}".encode()
    assert calls == ["public.example"]


def test_every_resolved_address_is_checked_and_the_first_usable_one_used(server):
    with pytest.raises(FetchError, match="private address 10.0.0.7"):
        client(lambda host, port: ["127.0.0.1", "10.0.0.7"]).get(f"http://public.example:{server.port}/card.md")
    assert server.hits == {}


def test_credentials_are_refused_and_never_printed(server):
    url = f"http://reader:s3cret@127.0.0.1:{server.port}/card.md"
    with pytest.raises(FetchError) as info:
        client().get(url)
    assert info.value.kind == "refused" and "user name or password" in str(info.value)
    assert "s3cret" not in str(info.value) and "s3cret" not in info.value.url
    assert server.hits == {}


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://127.0.0.1:80\\@example.org/", "backslash"),
        ("http://example.org\\.evil.test/", "backslash"),
        ("http://user@example.org/", "user name or password"),
        ("http://:@example.org/", "user name or password"),
        ("http://exa mple.org/", "' '"),
        ("http://example.org/a b", "' '"),
        ("http://example.org\t/", "'\\t'"),
        ("http://example.org\x00/", "'\\x00'"),
        ("http://ex%61mple.org/", "percent-encoding"),
        ("http://[fe80::1%25eth0]/", "zone id"),
        ("http://[::1/", "not"),
        ("http://example.org:99999/", "out of range"),
        ("http://example.org:80:80/", "not a plain host[:port]"),
        ("http://example.org:/", "not a plain host[:port]"),
        ("http:example.org/x", "'//'"),
        ("http:///x", "not a plain host[:port]"),
        ("http://2130706433/", "not a dotted IPv4 address"),
        ("http://127.1/", "not a dotted IPv4 address"),
        ("http://0x7f.0.0.1/", "ends in a number"),
        ("http://exam_ple..org/", "not a valid DNS name"),
        ("gopher://example.org/", "scheme 'gopher'"),
        ("http://" + "a" * 3000 + ".org/", "over the 2048-character limit"),
    ],
)
def test_ambiguous_urls_get_a_clear_error(url, words):
    with pytest.raises(UrlError) as info:
        split_url(url)
    assert words in str(info.value)
    with pytest.raises(FetchError) as fetch_info:
        check_url_allowed(url, resolver=lambda host, port: pytest.fail("must not resolve"))
    assert fetch_info.value.kind == "refused"


def test_plain_urls_split_into_what_is_contacted():
    parts = split_url("https://Example.ORG/a b%20c?q=1#frag".replace(" ", "%20"))
    assert (parts.scheme, parts.host, parts.port, parts.host_header) == ("https", "example.org", 443, "example.org")
    assert parts.target == "/a%20b%20c?q=1"
    six = split_url("http://[2001:db8::1]:8080")
    assert (six.host, six.host_header, six.target, str(six.ip)) == (
        "2001:db8::1",
        "[2001:db8::1]:8080",
        "/",
        "2001:db8::1",
    )
    assert split_url("https://bücher.example/").host == "xn--bcher-kva.example"


def test_redact_hides_credentials_and_bounds_length():
    assert redact("https://u:p@example.org/x") == "https://***@example.org/x"
    assert redact("x" * 500).endswith("...") and len(redact("x" * 500)) == 200
    assert redact("http://a\x1b[2J/") == "http://a\\x1b[2J/"


def test_a_trickling_server_is_stopped_by_the_deadline(server):
    fetcher = client(deadline=0.6, read_timeout=5.0)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher.get(server.url("/trickle"))
    elapsed = time.monotonic() - started
    assert info.value.kind == "timeout" and "0.6-second deadline" in str(info.value)
    assert elapsed < 1.5


def test_waits_never_run_past_the_deadline(server):
    waits = []
    fetcher = client(deadline=5.0, retries=3, backoff=10.0)
    fetcher.sleep = waits.append
    with pytest.raises(FetchError, match="5-second deadline"):
        fetcher.get(server.url("/always-500"))
    assert waits == [] and server.hits["/always-500"] == 1


def test_schema_refuses_ambiguous_urls_without_showing_credentials(ws):
    sources = base_sources()
    sources[0]["url"] = "http://127.0.0.1:1\\@example.org/card"
    sources[1]["url"] = "https://reader:s3cret@example.org/report"
    ws.write(sources=sources)
    report = ws.verify()
    bad = [f for f in report.findings if f.code == "bad-url"]
    assert codes(bad) == ["bad-url", "bad-url"]
    assert "backslash" in bad[0].message and "user name or password" in bad[1].message
    assert all("s3cret" not in f.format() for f in report.findings)


def _certificate(tmp_path, name: str):
    """A self-signed certificate for ``name`` (openssl CLI), as (cert path, server SSL context)."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_pins_the_address_and_checks_the_certificate_name(tmp_path):
    cert, context = _certificate(tmp_path, "public.example")
    tls = LocalServer(tls=context)
    try:
        url = f"https://public.example:{tls.port}/echo-host"
        result = client(lambda host, port: ["127.0.0.1"], ca_certs=str(cert)).get(url)
        assert result.ok and result.body == f"Host: public.example:{tls.port}".encode()
        # the same server under another name: the certificate does not match it
        with pytest.raises(FetchError) as info:
            client(lambda host, port: ["127.0.0.1"], ca_certs=str(cert)).get(
                f"https://other.example:{tls.port}/echo-host"
            )
        assert info.value.kind == "connection" and "other.example" in str(info.value)
    finally:
        tls.close()


def test_fetch_and_check_links_refuse_the_backslash_url_end_to_end(ws, capsys, server):
    from test_sources_cli import fetch_args, links_args, run

    sources = base_sources()
    sources[0]["url"] = f"http://127.0.0.1:{server.port}\\@public.example/card.md"
    ws.write(sources=sources, claims=[])
    before = (ws.snapshots / "card.md").read_bytes()
    code, _, err = run(capsys, *fetch_args(ws, "card"))
    assert code == 2 and "backslash" in err
    code, _, err = run(capsys, *links_args(ws, "--write"))
    assert code == 2 and "backslash" in err
    assert server.hits == {} and (ws.snapshots / "card.md").read_bytes() == before


# ---- addresses that wrap or route to internal ones ---------------------------------------------


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("2002:7f00:1::", "wraps 127.0.0.1"),  # 6to4 of the loopback address
        ("2002:a9fe:a9fe::", "wraps 169.254.169.254"),  # 6to4 of the metadata address
        ("2002:0a00:0001::1", "wraps 10.0.0.1"),
        ("fec0::1", "site-local"),
        ("64:ff9b::7f00:1", "wraps 127.0.0.1"),  # NAT64 of 127.0.0.1
        ("::7f00:1", "wraps 127.0.0.1"),  # IPv4-compatible form of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "wraps 192.0.2.45"),  # Teredo, client in TEST-NET-1
        ("100.64.0.1", "not a global address"),  # shared address space (carrier-grade NAT)
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("ff0e::1", "multicast"),
    ],
)
def test_addresses_are_judged_by_what_they_reach(address, words):
    problem = address_problem(address, allow_loopback=False)
    assert problem is not None and words in problem


def test_a_wrapped_loopback_address_is_refused_even_when_loopback_is_allowed():
    assert address_problem("2002:7f00:1::", allow_loopback=True) is not None
    assert address_problem(PUBLIC, allow_loopback=False) is None


@pytest.mark.parametrize("address", ["2002:7f00:1::", "fec0::1"])
def test_no_connection_is_attempted_to_a_wrapped_or_site_local_address(address):
    fetcher = client(resolver=lambda host, port: [address], allow_loopback=False)
    with pytest.raises(FetchError) as caught:
        fetcher.get("http://public.example/")
    assert caught.value.kind == "refused"
