"""SafeClient and text extraction against a local server on 127.0.0.1 (no other address is contacted)."""

from __future__ import annotations

import pytest
from sources_fixtures import CARD, tiny_pdf

from kdalib.sources.addresses import address_problem
from kdalib.sources.extract import body_to_text, html_to_text, pdf_to_text, raw_url
from kdalib.sources.http import FetchError, FetchPolicy, SafeClient, check_url_allowed, retry_after_seconds


def client(**policy) -> SafeClient:
    defaults = {
        "allow_loopback": True,
        "min_interval": 0.0,
        "backoff": 0.0,
        "retries": 2,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
    }
    defaults.update(policy)
    return SafeClient(FetchPolicy(**defaults))


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://172.16.5.5/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "private"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://224.0.0.1/", "multicast"),
        ("ftp://example.org/x", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
    ],
)
def test_unsafe_urls_are_refused_before_any_connection(url, words):
    with pytest.raises(FetchError) as info:
        check_url_allowed(url, resolver=lambda host, port: pytest.fail("must not resolve"))
    assert info.value.kind == "refused" and words in str(info.value)


def test_names_that_resolve_to_private_addresses_are_refused():
    with pytest.raises(FetchError, match="private address 10.0.0.7"):
        check_url_allowed("https://intranet.example/", resolver=lambda host, port: ["93.184.215.14", "10.0.0.7"])
    check_url_allowed("https://example.org/", resolver=lambda host, port: ["93.184.215.14"])


def test_allow_loopback_admits_only_loopback():
    assert address_problem("127.0.0.1", allow_loopback=True) is None
    assert address_problem("::1", allow_loopback=True) is None
    assert address_problem("10.0.0.1", allow_loopback=True) == "private address 10.0.0.1"
    assert address_problem("169.254.1.1", allow_loopback=True) == "link-local address 169.254.1.1"


def test_local_server_is_refused_without_the_test_flag(server):
    with pytest.raises(FetchError) as info:
        client(allow_loopback=False).get(server.url("/card.md"))
    assert info.value.kind == "refused"
    assert server.hits == {}


def test_plain_fetch(server):
    result = client().get(server.url("/card.md"))
    assert result.ok and result.body.decode() == CARD and result.content_type.startswith("text/markdown")


@pytest.mark.parametrize(
    "path, words",
    [
        ("/redirect-private", "private address 10.0.0.1"),
        ("/redirect-metadata", "link-local address 169.254.169.254"),
        ("/redirect-localhost-name", "refusing to connect to localhost"),
    ],
)
def test_every_redirect_hop_is_checked(server, path, words):
    fetcher = client()
    # "localhost" answers 127.0.0.2 here: loopback, but not the one address the test flag admits
    fetcher.resolver = lambda host, port: ["127.0.0.2"]
    with pytest.raises(FetchError) as info:
        fetcher.get(server.url(path))
    assert info.value.kind == "refused" and words in str(info.value)
    assert server.hits == {path: 1}


def test_redirects_are_followed_and_recorded(server):
    result = client().get(server.url("/moved"))
    assert result.ok and result.redirects == [(301, server.url("/card.md"))]
    with pytest.raises(FetchError) as info:
        client(max_redirects=3).get(server.url("/loop"))
    assert info.value.kind == "too-many-redirects" and server.hits["/loop"] == 4


def test_oversize_bodies_are_cut_off(server):
    small = client(max_bytes=16 * 1024)
    with pytest.raises(FetchError, match="over the 16384-byte cap") as declared:
        small.get(server.url("/declared-big"))
    assert declared.value.kind == "too-large"
    with pytest.raises(FetchError, match="exceeds the 16384-byte cap"):
        small.get(server.url("/streamed-big"))


def test_429_with_retry_after_then_success(server):
    waits = []
    fetcher = client()
    fetcher.sleep = waits.append
    result = fetcher.get(server.url("/rate-limited"))
    assert result.ok and result.body == b"finally"
    assert server.hits["/rate-limited"] == 2 and waits == [0.0]


def test_5xx_is_retried_with_exponential_backoff(server):
    waits = []
    fetcher = client(backoff=0.5, retries=3)
    fetcher.sleep = waits.append
    assert fetcher.get(server.url("/flaky")).body == b"recovered"
    assert waits == [0.5, 1.0]
    failing = client(retries=1)
    failing.sleep = lambda s: None
    result = failing.get(server.url("/always-500"))
    assert result.status == 500 and not result.ok and server.hits["/always-500"] == 2


def test_timeouts_are_retried_then_reported(server):
    fetcher = client(read_timeout=0.2, retries=1)
    fetcher.sleep = lambda s: None
    with pytest.raises(FetchError) as info:
        fetcher.get(server.url("/slow"))
    assert info.value.kind == "timeout" and server.hits["/slow"] == 2


def test_requests_to_one_host_are_spaced_by_the_rate_limit(server):
    now = [100.0]
    waits = []
    fetcher = client(min_interval=2.0)
    fetcher.clock = lambda: now[0]
    fetcher.sleep = waits.append
    fetcher.get(server.url("/card.md"))
    now[0] += 0.5
    fetcher.get(server.url("/card.md"))
    assert waits == [1.5]


def test_retry_after_parsing():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_html_pdf_and_text_extraction(server):
    fetcher = client()
    html = fetcher.get(server.url("/page.html"))
    text = body_to_text(html.body, html.content_type)
    assert "Model\u00a0M" in text and "Total 1T params" in text and "x=1" not in text and "p{}" not in text
    pdf = fetcher.get(server.url("/doc.pdf"))
    assert "Kimi PDF text 1T" in body_to_text(pdf.body, pdf.content_type)
    assert body_to_text("naïve".encode("latin-1"), "text/plain; charset=latin-1") == "naïve"


def test_extractors_directly():
    assert html_to_text("<p>a &amp; b</p><ul><li>one</li><li>two</li></ul>").split() == ["a", "&", "b", "one", "two"]
    assert pdf_to_text(tiny_pdf("Hello 32B")).strip() == "Hello 32B"
    with pytest.raises(ValueError, match="not a readable PDF"):
        pdf_to_text(b"%PDF-1.4 garbage")


def test_raw_url_for_github_blobs():
    assert raw_url("https://github.com/MoonshotAI/Kimi-K2/blob/abc/README.md") == (
        "https://raw.githubusercontent.com/MoonshotAI/Kimi-K2/abc/README.md"
    )
    assert raw_url("https://arxiv.org/abs/2507.20534") == "https://arxiv.org/abs/2507.20534"
