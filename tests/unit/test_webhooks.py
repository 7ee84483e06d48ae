"""Webhook pieces without a server: Standard Webhooks signing (against the reference implementation's test vector),
the operator's allow-list, URL checks, the forbidden addresses and the retry schedule."""

from __future__ import annotations

import random
import socket

import pytest

from editaudit.core import webhooks as wh


def test_signature_matches_the_standard_webhooks_reference_vector():
    # from the Standard Webhooks reference libraries' tests (and Svix's)
    sig = wh.sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                  b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_new_secrets_are_whsec_base64_of_32_random_bytes():
    import base64

    a, b = wh.new_secret(), wh.new_secret()
    assert a != b and a.startswith("whsec_") and len(base64.b64decode(a[6:])) == 32
    headers = wh.signed_headers(a, "abc", 1700000000, b"{}")
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    assert headers["webhook-timestamp"] == "1700000000" and headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize("entry, host, port, allowed", [
    ("hooks.example.com", "hooks.example.com", 443, True),
    ("hooks.example.com", "hooks.example.com", 8080, True),  # no port: any port
    ("HOOKS.example.com.", "hooks.example.com", 443, True),
    ("hooks.example.com:8443", "hooks.example.com", 443, False),
    ("hooks.example.com:8443", "hooks.example.com", 8443, True),
    ("hooks.example.com", "evil-hooks.example.com", 443, False),
    ("hooks.example.com", "hooks.example.com.evil.org", 443, False),
    ("*.example.com", "a.b.example.com", 443, True),
    ("*.example.com", "example.com", 443, False),
    ("*.example.com", "evilexample.com", 443, False),
    ("127.0.0.1:8080", "127.0.0.1", 8080, True),
    ("127.0.0.1:8080", "127.0.0.2", 8080, False),
    ("[::1]:8080", "::1", 8080, True),
    ("fd00::1", "fd00::1", 80, True),
])
def test_allow_list_entries(entry, host, port, allowed):
    assert wh.parse_allowed(entry).matches(host, port) is allowed


@pytest.mark.parametrize("entry", ["*", "*.*.com", "a*.example.com", "http://x.com", "x.com/path", "u@x.com",
                                   "x.com:0", "x.com:99999", "x.com:port", "*.10.0.0.1", "*.254", "[nope]:80", ""])
def test_bad_allow_list_entries_are_refused(entry):
    with pytest.raises(ValueError):
        wh.parse_allowed(entry)


def test_settings_refuse_a_bad_allow_list(tmp_path):
    from editaudit.core.settings import Settings

    with pytest.raises(ValueError, match="only a leading"):
        Settings(data_dir=tmp_path, webhook_allowed_hosts=["*"])
    assert Settings(data_dir=tmp_path, webhook_allowed_hosts=["*.example.com"]).webhook_allowed_hosts


@pytest.mark.parametrize("url, reason", [
    ("ftp://hooks.example.com/x", "scheme must be http or https"),
    ("file:///etc/passwd", "scheme must be http or https"),
    ("https://user:pw@hooks.example.com/", "credentials in the URL"),
    ("https://hooks.example.org/", "not in the operator's allow-list"),
    ("https://hooks.example.com:8443/", "not in the operator's allow-list"),
    ("https://169.254.169.254/", "not in the operator's allow-list"),
    ("https://2130706433/", "not in the operator's allow-list"),
    ("https:///nohost", "no host"),
    ("https://hooks.example.com/" + "x" * 2000, "longer than"),
])
def test_urls_refused_at_registration(url, reason):
    with pytest.raises(wh.UrlRefused, match=reason):
        wh.check_url(url, ["hooks.example.com:443"])


def test_no_allow_list_means_webhooks_are_off():
    with pytest.raises(wh.UrlRefused, match="allows no webhook hosts"):
        wh.check_url("https://hooks.example.com/", [])


def test_an_allowed_url_is_kept_without_its_fragment():
    target = wh.check_url("https://Hooks.Example.com/ci/trigger?token=abc#frag", ["hooks.example.com"])
    assert str(target.url) == "https://hooks.example.com/ci/trigger?token=abc"
    assert (target.host, target.port) == ("hooks.example.com", 443)


@pytest.mark.parametrize("address, forbidden", [
    ("169.254.169.254", True), ("169.254.0.1", True), ("fe80::1", True), ("fd00:ec2::254", True),
    ("::ffff:169.254.169.254", True), ("64:ff9b::a9fe:a9fe", True), ("100.100.100.200", True),
    ("127.0.0.1", False), ("10.0.0.5", False), ("93.184.216.34", False), ("2001:db8::1", False),
])
def test_forbidden_addresses(address, forbidden):
    assert wh.forbidden_address(address) is forbidden


def test_a_forbidden_address_passes_only_when_listed_literally():
    assert not wh.address_allowed("169.254.169.254", 80, ["*.example.com", "hooks.example.com"])
    assert wh.address_allowed("169.254.169.254", 80, ["169.254.169.254"])
    assert not wh.address_allowed("169.254.169.254", 80, ["169.254.169.254:8080"])
    assert wh.address_allowed("10.1.2.3", 80, [])


def test_send_time_resolution_refuses_a_host_that_resolves_to_metadata(monkeypatch):
    """A host on the list whose name resolves to the metadata address is refused before any connection."""
    from editaudit.core.settings import Settings
    from editaudit.worker.jobs import webhooks as sender

    def resolver(host, port, *args, **kwargs):
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    class NoConnections:
        def build_request(self, *a, **k):
            raise AssertionError("a refused delivery must not be sent")

    settings = Settings(webhook_allowed_hosts=["hooks.example.com"])
    outcome = sender.attempt(NoConnections(), settings, "id1", "https://hooks.example.com/x", wh.new_secret(), b"{}")
    assert outcome.refused and not outcome.ok and "169.254.169.254" in outcome.error
    with pytest.raises(sender.Refused):
        sender.resolve(wh.check_url("https://hooks.example.com/x", ["hooks.example.com"]), ["hooks.example.com"])


def test_retry_delays_grow_with_jitter():
    rng = random.Random(0)
    delays = [wh.retry_delay(n, 5, rng) for n in range(1, 9)]
    for n, d in enumerate(delays, start=1):
        nominal = 5 * wh.BACKOFF[min(n, len(wh.BACKOFF)) - 1]
        assert nominal * 0.8 <= d <= nominal * 1.2
    assert delays[0] < delays[1] < delays[2] < delays[3] < delays[4]


def test_subscriptions():
    assert wh.subscribed(["*"], "gate.evaluated")
    assert wh.subscribed(["edit.failed"], "edit.failed") and not wh.subscribed(["edit.failed"], "edit.succeeded")
    assert wh.subscribed([], "ping")
