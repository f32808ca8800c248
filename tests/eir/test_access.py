"""Who may connect to the EIR server: Host (DNS rebinding), Origin and token, over real sockets."""

from __future__ import annotations

import logging
import socket

import pytest

from hfstream.eir.access import AccessPolicy
from hfstream.eir.client import EirClient
from hfstream.errors import ConfigError
from test_server import RawWs, serving

TOKEN = "Zm9v+YmFy/YmF6=="  # what `openssl rand -base64` makes: '+', '/' and '=' included


def refusal(url: str, **headers) -> tuple[int, bytes]:
    """The HTTP status and body an upgrade request gets (the connection is closed after)."""
    ws = RawWs(url, headers=headers)
    ws.close()
    return ws.status, ws.body


def test_dns_rebinding_is_refused_and_loopback_hosts_pass(tmp_path, caplog):
    with serving(tmp_path) as server, caplog.at_level(logging.WARNING, logger="hfstream.eir"):
        port = server.server.port
        status, body = refusal(server.url, Host=f"evil.example:{port}", Origin=f"http://evil.example:{port}")
        assert status == 403 and b"--allow-host evil.example" in body
        assert any("evil.example" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
        for host in ("evil.example", f"10.1.2.3:{port}", f"localhost.evil.example:{port}"):
            assert refusal(server.url, Host=host)[0] == 403, host
        assert refusal(server.url, Host=None)[0] == 400
        assert refusal(server.url, host=f"evil.example:{port}")[0] == 400  # a second Host header
        for host in (f"[::1]:{port}", f"localhost.:{port}", f"LOCALHOST:{port}", f"127.0.0.2:{port}",
                     "localhost:1", "localhost", f"127.0.0.1:{port}"):
            ws = RawWs(server.url, headers={"Host": host})
            assert ws.status == 101, host
            assert ws.handshake()["type"] == "handshake"
            assert len(ws.request({"type": "getData", "payload": {"batch_size": 2}})["payload"]) == 2
            ws.close()


def test_allow_host_lets_a_name_in(tmp_path):
    with serving(tmp_path, allowed_hosts=("gpu01.lab",)) as server:
        port = server.server.port
        ws = RawWs(server.url, headers={"Host": f"GPU01.lab:{port}", "Origin": f"http://gpu01.lab:{port}"})
        assert ws.status == 101 and ws.handshake()["type"] == "handshake"
        ws.close()
        assert refusal(server.url, Host=f"gpu02.lab:{port}")[0] == 403


def test_the_host_rule_on_a_public_bind():
    """Bound to 0.0.0.0 (not bound here: tests listen on 127.0.0.1 only, the rule is the policy's)."""
    public = AccessPolicy("/ws", "0.0.0.0")
    assert public.host_allowed("10.1.2.3:8000") and public.host_allowed("[2001:db8::7]:8000")  # IPs cannot be rebound
    assert public.host_allowed(f"{socket.gethostname()}:8000") and public.host_allowed("localhost:8000")
    assert not public.host_allowed("evil.example:8000") and not public.host_allowed("gpu01.lab")
    assert AccessPolicy("/ws", "0.0.0.0", allowed_hosts=("gpu01.lab",)).host_allowed("gpu01.lab:8000")
    assert AccessPolicy("/ws", "0.0.0.0", token="s3cret").host_allowed("evil.example:8000")  # the token guards
    assert AccessPolicy("/ws", "192.168.1.5").host_allowed("192.168.1.5:8000")
    loopback = AccessPolicy("/ws", "127.0.0.1", token="s3cret")
    assert not loopback.host_allowed("evil.example:8000") and not loopback.host_allowed("10.1.2.3")
    assert AccessPolicy("/ws", "127.0.0.1", allowed_hosts=("*",)).host_allowed("anything.example")


def test_a_base64_token_works_as_pasted_and_refusals_say_why(tmp_path, caplog):
    with serving(tmp_path, token=TOKEN) as server, caplog.at_level(logging.WARNING, logger="hfstream.eir"):
        encoded = TOKEN.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        for url in (f"{server.url}?token={TOKEN}", f"{server.url}?token={encoded}",
                    f"{server.url}?other=1&token={TOKEN}"):
            assert refusal(url)[0] == 101, url
        assert refusal(server.url, Authorization=f"Bearer {TOKEN}")[0] == 101
        with EirClient(f"{server.url}?token={TOKEN}") as client:  # hfstream's own client, raw '+'
            assert len(client.get_data(3)) == 3

        status, body = refusal(server.url)
        assert status == 401 and b"none was sent" in body
        status, body = refusal(f"{server.url}?token={TOKEN.replace('+', '%20')}")  # '+' read as a space
        assert status == 401 and b"does not match" in body
        with pytest.raises(ConfigError, match="none was sent"):
            EirClient(server.url).connect()
        with pytest.raises(ConfigError, match="does not match"):
            EirClient(server.url, token="wrong").connect()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert sum("no token" in m for m in refusals) == 2 and sum("wrong token" in m for m in refusals) == 2
    assert all(r.levelno == logging.WARNING for r in caplog.records if "refused" in r.getMessage())
    assert not any(TOKEN in r.getMessage() or "Zm9v" in r.getMessage() for r in caplog.records)
