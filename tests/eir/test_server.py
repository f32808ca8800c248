"""The EIR WebSocket server over real sockets on 127.0.0.1: protocol, cursor, limits, hardening."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from conftest import make_texts, write_jsonl
from hfstream import HuggingFaceStreamingCorpus
from hfstream.cli.main import main as cli_main
from hfstream.eir.client import EirClient, ServerUnavailable
from hfstream.eir.samples import sample_texts
from hfstream.eir.runner import ServerThread
from hfstream.eir.server import ServerConfig
from hfstream.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serving(tmp_path: Path, num_docs: int = 40, **config):
    """A server on a free port over a real corpus (a JSONL file) that repeats forever."""
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in make_texts(num_docs)])
    config.setdefault("sequence_length", 8)
    with HuggingFaceStreamingCorpus(str(path), epochs=None) as corpus, \
            ServerThread(corpus, ServerConfig(port=0, **config), name="docs.jsonl") as server:
        yield server


def expected_texts(num_docs: int, sequence_length: int, count: int) -> list[str]:
    """The first ``count`` sample texts of the cycled corpus, computed without any server."""
    docs = make_texts(num_docs)
    cycled = (docs[i % num_docs] for i in range(10**9))
    out = []
    for text in sample_texts(cycled, sequence_length):
        out.append(text)
        if len(out) == count:
            return out
    return out


class Closed(Exception):
    def __init__(self, code: int | None):
        super().__init__(f"closed with code {code}")
        self.code = code


class RawWs:
    """A bare WebSocket client on a plain socket: it can send any frame, valid or not, and like
    EIR's client it never answers pings unless it reads (it never does here)."""

    def __init__(self, url: str, headers: dict[str, str | None] | None = None, timeout: float = 5.0):
        host, port, path = re.match(r"ws://([^:/]+):(\d+)(/.*)", url).groups()
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        headers = {"Host": f"{host}:{port}", **(headers or {})}  # Host: None sends none
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v is not None)
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split()[1]) if head else 0
        self.body = b""
        if self.status and self.status != 101:  # the refusal's text (websockets sends Content-Length)
            length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
            while len(self.buf) < length:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                self.buf += chunk
            self.body = self.buf[:length]

    def send_frame(self, payload: bytes, opcode: int = 1, fin: bool = True, rsv: int = 0,
                   mask: bool = True, claimed_length: int | None = None) -> None:
        n = len(payload) if claimed_length is None else claimed_length
        header = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        bit = 0x80 if mask else 0
        if n < 126:
            header += bytes([bit | n])
        elif n < 1 << 16:
            header += bytes([bit | 126]) + struct.pack("!H", n)
        else:
            header += bytes([bit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            header += key
        self.sock.sendall(header + payload)

    def send_json(self, message) -> None:
        self.send_frame(orjson.dumps(message))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise Closed(None)
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def recv_json(self) -> dict:
        """The next text message (pings are read but left unanswered)."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 8:
                raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
            if opcode == 1:
                return orjson.loads(payload)

    def request(self, message) -> dict:
        self.send_json(message)
        return self.recv_json()

    def handshake(self) -> dict:
        return self.request({"type": "handshake", "version": "1.0", "worker_id": 0})

    def outcome(self) -> str:
        """'error' (an error reply), 'closed' (a close frame or EOF), or the reply type."""
        try:
            return self.recv_json()["type"]
        except Closed:
            return "closed"
        except (ConnectionError, socket.timeout):
            return "closed"

    def abort(self) -> None:
        """Close with a TCP reset, as a killed process would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def ids_of(samples) -> list[str]:
    return [s["sample_id"] for s in samples]


# -- the message set, wire-exact -----------------------------------------------------------------
def test_every_message_eir_sends_gets_the_reply_eir_waits_for(tmp_path):
    with serving(tmp_path, sequence_length=8) as server:
        ws = RawWs(server.url)
        assert ws.handshake() == {"type": "handshake", "version": "1.0"}
        info = ws.request({"type": "getInfo"})  # no payload, as EIR sends it
        assert info == {"type": "info", "payload": {"inputs": {}, "outputs": {"text_output": {"type": "sequence"}}}}
        data = ws.request({"type": "getData", "payload": {"batch_size": 5}})
        assert data["type"] == "data" and ids_of(data["payload"]) == [f"sample_{i}" for i in range(5)]
        expected = expected_texts(40, 8, 5)
        for sample, text in zip(data["payload"], expected):
            assert sample == {"inputs": {"text_output": text},
                              "target_labels": {"text_output": {"text_output": text}},
                              "sample_id": sample["sample_id"]}
            assert len(text.split()) == 8
        assert ws.request({"type": "heartbeat"}) == {"type": "heartbeat"}
        reply = ws.request({"type": "setValidationIds", "payload": {"validation_ids": ["sample_6"]}})
        assert reply["type"] == "validationIdsConfirmation" and isinstance(reply["payload"]["message"], str)
        status = ws.request({"type": "status", "payload": {}})
        assert status["type"] == "status"
        assert status["payload"]["current_position"] == 5 and status["payload"]["validation_ids_count"] == 1
        ws.send_json({"type": "reset"})  # 0.25 sends reset without payload
        replies = [ws.recv_json(), ws.recv_json()]
        assert sorted(r["type"] for r in replies) == ["reset", "resetConfirmation"]
        assert all(isinstance(r["payload"]["message"], str) for r in replies)
        again = ws.request({"type": "getData", "payload": {"batch_size": 8}})["payload"]
        assert ids_of(again) == [f"sample_{i}" for i in (0, 1, 2, 3, 4, 5, 7, 8)]
        assert [s["inputs"]["text_output"] for s in again[:5]] == expected
        ws.close()


def test_an_eir_style_run_setup_reset_validation_then_training_on_two_connections(tmp_path):
    """The connection sequence of ``eirtrain`` (EIR_PROTOCOL.md section 3, 0.25 flavour)."""
    setup_size, valid_size, batch = 600, 50, 32
    with serving(tmp_path, num_docs=30, sequence_length=0) as server:  # 30 docs: must cycle
        conn = RawWs(server.url)
        conn.handshake()
        assert conn.request({"type": "status", "payload": {}})["type"] == "status"
        conn.close()

        gather = RawWs(server.url)  # validate_server_protocol, then the setup gather
        gather.handshake()
        assert gather.request({"type": "getInfo"})["type"] == "info"
        assert len(gather.request({"type": "getData", "payload": {"batch_size": 1}})["payload"]) == 1
        assert gather.request({"type": "heartbeat"}) == {"type": "heartbeat"}
        gather.send_json({"type": "reset"})
        assert {gather.recv_json()["type"], gather.recv_json()["type"]} == {"reset", "resetConfirmation"}
        gather.request({"type": "getInfo"})
        setup = []
        while len(setup) < setup_size:
            setup += gather.request({"type": "getData", "payload": {"batch_size": batch}})["payload"]
        gather.close()
        assert len(set(ids_of(setup))) == len(setup)  # unique although the corpus repeats 20 times

        rewind = RawWs(server.url)
        rewind.handshake()
        rewind.send_json({"type": "reset", "payload": {}})
        assert {rewind.recv_json()["type"], rewind.recv_json()["type"]} == {"reset", "resetConfirmation"}
        rewind.close()

        validation = set(random.Random(0).sample(ids_of(setup), valid_size))
        conn = RawWs(server.url)
        conn.handshake()
        assert conn.request({"type": "setValidationIds",
                             "payload": {"validation_ids": sorted(validation)}})["type"] == "validationIdsConfirmation"
        conn.close()

        workers = [RawWs(server.url) for _ in range(2)]
        for w in workers:
            w.handshake()
        received: list[list[dict]] = [[], []]
        for _ in range(8):  # 0.25: a heartbeat before every getData; the echo is skipped
            for k, w in enumerate(workers):
                assert w.request({"type": "heartbeat"}) == {"type": "heartbeat"}
                received[k] += w.request({"type": "getData", "payload": {"batch_size": batch}})["payload"]
        setup_text = {s["sample_id"]: s["inputs"]["text_output"] for s in setup}
        ids = [ids_of(r) for r in received]
        assert not set(ids[0]) & set(ids[1])  # one shared cursor: disjoint
        assert not (set(ids[0]) | set(ids[1])) & validation
        assert len(ids[0]) + len(ids[1]) == 16 * batch
        for sample in received[0] + received[1]:  # ids are stable across resets
            assert sample["inputs"]["text_output"] == setup_text[sample["sample_id"]]
        for w in workers:
            w.close()


def test_terminate_after_max_iterations_until_a_reset(tmp_path):
    with serving(tmp_path, max_iterations=50) as server, EirClient(server.url) as client:
        sizes = [len(client.get_data(20)) for _ in range(3)]
        assert sizes == [20, 20, 10]
        assert client.get_data(20) is None and client.get_data(20) is None  # the connection stays open
        assert client.status()["remaining_iterations"] == 0
        client.reset()
        assert ids_of(client.get_data(3)) == ["sample_0", "sample_1", "sample_2"]


def test_reset_is_broadcast_to_other_connections(tmp_path):
    with serving(tmp_path) as server, EirClient(server.url) as a, EirClient(server.url) as b:
        a.get_data(10)
        b.reset()
        assert ids_of(a.get_data(2)) == ["sample_0", "sample_1"]  # skipped the notice on the way
        assert a.num_broadcast_resets == 1 and b.num_broadcast_resets == 0


def test_eight_concurrent_clients_receive_disjoint_samples(tmp_path):
    num_clients, num_batches, batch = 8, 10, 32
    with serving(tmp_path) as server:
        results: list[list[str]] = [[] for _ in range(num_clients)]
        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                with EirClient(server.url, timeout=20) as client:
                    for _ in range(num_batches):
                        results[k] += ids_of(client.get_data(batch))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(num_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        everything = [i for r in results for i in r]
        assert len(everything) == len(set(everything)) == num_clients * num_batches * batch
        assert set(everything) == {f"sample_{p}" for p in range(len(everything))}  # nothing lost
        for r in results:  # each client sees the shared stream in order
            positions = [int(i.split("_")[1]) for i in r]
            assert positions == sorted(positions)


# -- hardening -----------------------------------------------------------------------------------
def _fuzz_cases(rng: random.Random):
    """(name, before_handshake, frames) where a frame is bytes (text frame) or send_frame kwargs."""
    yield "invalid JSON first", True, [b"{nope"]
    yield "getData before handshake", True, [b'{"type": "getData", "payload": {"batch_size": 4}}']
    yield "wrong version", True, [b'{"type": "handshake", "version": "2.0"}']
    yield "handshake without version", True, [b'{"type": "handshake"}']
    yield "binary garbage first", True, [{"payload": os.urandom(64), "opcode": 2}]
    yield "invalid UTF-8 text", False, [{"payload": b"\xff\xfe\xfd"}]
    yield "unmasked frame", False, [{"payload": b'{"type": "heartbeat"}', "mask": False}]
    yield "reserved opcode", False, [{"payload": b"x", "opcode": 3}]
    yield "RSV bits set", False, [{"payload": b'{"type": "heartbeat"}', "rsv": 0b111}]
    yield "claims 1 TB", False, [{"payload": b"", "claimed_length": 1 << 40}]
    yield "over max size", False, [b'{"type": "status", "payload": {"pad": "' + b"x" * 70_000 + b'"}}']
    yield "fragment then a new message", False, [{"payload": b'{"type": "hea', "fin": False},
                                                 b'{"type": "heartbeat"}']
    bad_json = [b"[]", b"null", b'"str"', b"{}", b'{"type": 5}', b'{"type": "getInfo", "payload": 3}',
                b'{"type": "getData", "payload": {"batch_size": -1}}',
                b'{"type": "getData", "payload": {"batch_size": 1000000}}',
                b'{"type": "getData", "payload": {"batch_size": null}}',
                b'{"type": "setValidationIds", "payload": {"validation_ids": "sample_1"}}',
                b'{"type": "setValidationIds", "payload": {"validation_ids": [[1]]}}',
                b'{"type": "terminate"}', b'{"type": "data", "payload": []}']
    yield "malformed messages", False, bad_json[:10]
    for k in range(12):
        frames = []
        for _ in range(rng.randint(1, 6)):
            choice = rng.random()
            if choice < 0.3:
                frames.append(bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, 200))))
            elif choice < 0.6:
                frames.append(rng.choice(bad_json))
            else:
                frames.append({"payload": os.urandom(rng.randint(0, 300)), "opcode": rng.choice([1, 2])})
        yield f"random {k}", rng.random() < 0.3, frames


def test_fuzzed_frames_never_disturb_a_well_behaved_client(tmp_path):
    with serving(tmp_path, max_message_bytes=64 << 10, max_bad_frames=8) as server:
        good_ids: list[str] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def well_behaved() -> None:
            try:
                with EirClient(server.url, timeout=10) as client:
                    for _ in range(400):
                        if stop.is_set():
                            break
                        good_ids.extend(ids_of(client.get_data(16)))
                        time.sleep(0.005)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        good = threading.Thread(target=well_behaved)
        good.start()
        outcomes = {}
        for name, before_handshake, frames in _fuzz_cases(random.Random(1234)):
            ws = RawWs(server.url, timeout=5)
            if not before_handshake:
                assert ws.handshake()["type"] == "handshake", name
            results = []
            try:
                for frame in frames:
                    if isinstance(frame, bytes):
                        ws.send_frame(frame)
                    else:
                        ws.send_frame(**frame)
                        if not frame.get("fin", True):
                            continue  # a fragment: nothing to answer yet
                    results.append(ws.outcome())
                    if results[-1] == "closed":
                        break
            except (BrokenPipeError, ConnectionResetError):
                results.append("closed")
            if before_handshake and results[-1] == "error":
                results.append(ws.outcome())  # refused: the error, then the close
            outcomes[name] = results
            assert results and set(results) <= {"error", "closed"}, (name, results)
            ws.abort() if len(outcomes) % 2 else ws.close()
        junk = socket.create_connection(("127.0.0.1", server.server.port), timeout=5)
        junk.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")  # e.g. a TLS client on a ws:// port
        answer = junk.recv(100)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4")  # refused, and nothing else happens
        junk.close()
        stop.set()
        good.join(30)
        assert not failures, failures
        assert len(good_ids) >= 16 and len(set(good_ids)) == len(good_ids)
        positions = [int(i.split("_")[1]) for i in good_ids]
        assert positions == sorted(positions)
        for name in ("invalid JSON first", "getData before handshake", "wrong version", "binary garbage first"):
            assert outcomes[name] == ["error", "closed"], name
        for name in ("invalid UTF-8 text", "unmasked frame", "claims 1 TB", "over max size",
                     "fragment then a new message"):
            assert outcomes[name] == ["closed"], name
        assert outcomes["malformed messages"][:8] == ["error"] * 8  # then closed: 8 bad in a row
        with EirClient(server.url) as client:  # and the server still serves newcomers
            assert len(client.get_data(4)) == 4


def test_abrupt_disconnects_leave_the_server_serving(tmp_path):
    with serving(tmp_path) as server:
        for k in range(12):
            ws = RawWs(server.url, timeout=5)
            if k % 3:
                ws.handshake()
                ws.send_json({"type": "getData", "payload": {"batch_size": 2000}})
            ws.abort()  # mid-request, or before the handshake
        half_open = socket.create_connection(("127.0.0.1", server.server.port))
        half_open.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finishes its upgrade
        with EirClient(server.url) as client:
            assert len(client.get_data(8)) == 8
            deadline = time.monotonic() + 10
            while client.status()["active_connections"] != 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.status()["active_connections"] == 1
        half_open.close()


def test_a_long_training_step_does_not_get_the_connection_dropped(tmp_path):
    """EIR answers pings only inside recv(); pings must never time out."""
    with serving(tmp_path, ping_interval=0.05) as server:
        ws = RawWs(server.url)
        ws.handshake()
        time.sleep(1.0)  # ~20 unanswered pings
        reply = ws.request({"type": "getData", "payload": {"batch_size": 3}})
        assert ids_of(reply["payload"]) == ["sample_0", "sample_1", "sample_2"]
        ws.close()


class _Hung:
    """A source whose first document comes only when released (a stalled upstream)."""

    def __init__(self):
        self.release = threading.Event()

    def stream(self):
        self.release.wait(30)
        yield "late"

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_pings_go_only_to_idle_connections_so_a_missing_reply_times_the_client_out():
    """EIR waits 30 s for a reply with a socket timeout that every frame restarts, pings
    included (here: 1 s): a server pinging a client that waits would hang it forever."""
    assert ServerConfig().ping_interval > 30  # longer than EIR's reply timeout: see its docstring
    source = _Hung()
    config = ServerConfig(port=0, ping_interval=0.2, reply_deadline=8.0, sequence_length=0)
    with ServerThread(source, config) as server:
        ws = RawWs(server.url)
        ws.handshake()
        ws.sock.settimeout(2.0)
        assert ws.recv_frame()[0] == 0x9  # idle: pinged (keeps NATs and proxies open)
        ws.send_json({"type": "getData", "payload": {"batch_size": 1}})  # never answered in time
        ws.sock.settimeout(1.0)
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            while time.monotonic() - t0 < 5.0:  # (the server's own deadline is 8 s)
                ws.recv_frame()  # a ping here would restart the timeout, as in websocket-client
        assert time.monotonic() - t0 < 3.0
        source.release.set()
        ws.close()


def test_caps_on_batch_size_and_validation_ids_answer_with_errors(tmp_path):
    with serving(tmp_path, max_batch_size=64, max_validation_ids=10) as server:
        ws = RawWs(server.url)
        ws.handshake()
        error = ws.request({"type": "getData", "payload": {"batch_size": 65}})
        assert error["type"] == "error" and "out of range [1, 64]" in error["payload"]["message"]
        ids = {"type": "setValidationIds", "payload": {"validation_ids": [f"sample_{i}" for i in range(11)]}}
        assert ws.request(ids)["type"] == "error"
        assert len(ws.request({"type": "getData", "payload": {"batch_size": 64}})["payload"]) == 64
        ws.close()


def test_token_path_and_connection_limit_are_enforced_before_the_upgrade(tmp_path):
    with serving(tmp_path, token="s3cret", max_connections=2) as server:
        assert RawWs(server.url).status == 401
        assert RawWs(server.url + "?token=wrong").status == 401
        with pytest.raises(ConfigError, match="HTTP 401"):
            EirClient(server.url).connect()
        with pytest.raises(ConfigError, match="HTTP 404"):
            EirClient(server.url.replace("/ws", "/other") + "?token=s3cret").connect()
        with EirClient(server.url + "?token=s3cret") as a, EirClient(server.url, token="s3cret") as b:
            assert len(a.get_data(2)) == len(b.get_data(2)) == 2
            with pytest.raises(ServerUnavailable, match="HTTP 503"):
                EirClient(server.url, token="s3cret").connect()


def test_cross_origin_browsers_are_refused_but_eir_style_origins_pass(tmp_path):
    with serving(tmp_path, allowed_origins=("https://notebook.example",)) as server:
        host = server.url.split("/")[2]
        assert RawWs(server.url, headers={"Origin": "https://evil.example"}).status == 403
        assert RawWs(server.url, headers={"Origin": "https://notebook.example"}).status == 101
        eir_like = RawWs(server.url, headers={"Origin": f"http://{host}"})  # what websocket-client sends
        assert eir_like.status == 101 and eir_like.handshake()["type"] == "handshake"
        eir_like.close()


def test_a_busy_port_is_a_clear_error(tmp_path):
    with serving(tmp_path) as server:
        with pytest.raises(ConfigError) as info:
            ServerThread(object.__new__(_Nothing), ServerConfig(port=server.server.port)).start()
        assert "already in use" in info.value.message and "--port" in info.value.hint


class _Nothing:
    def stream(self):
        return iter(())

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


# -- the command ---------------------------------------------------------------------------------
class ServeProcess:
    """``hfstream serve --port 0 ARGS`` in its own process, as a user runs it, once it is ready."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "hfstream.cli.main", "serve", "--port", "0", *args],
                                     stderr=subprocess.PIPE, env=env, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any("ready" in line for line in self.lines) and self.proc.poll() is None:
            assert time.monotonic() < deadline, "".join(self.lines)
            self.lines.append(self.proc.stderr.readline())
        self.url = re.search(r"at (ws://\S+) ", "".join(self.lines)).group(1)
        self.pid = self.proc.pid

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig`` (Ctrl+C by default) and return the exit code; ``log()`` then has it all."""
        self.proc.send_signal(sig)
        code = self.proc.wait(15)
        self.lines.append(self.proc.stderr.read())
        return code

    def log(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_hfstream_serve_logs_its_url_serves_and_stops_cleanly_on_ctrl_c(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in make_texts(20)])
    with ServeProcess("--dataset", str(path), "--sequence-length", "0") as server:
        assert server.url.startswith("ws://127.0.0.1:")
        with EirClient(server.url) as client:
            texts = [s["inputs"]["text_output"] for s in client.get_data(25)]
        assert texts == (make_texts(20) * 2)[:25]  # documents mode, cycling forever by default
        assert server.stop() == 0
        assert "stopped after" in server.log()


def test_hfstream_serve_fails_fast_on_a_bad_dataset(tmp_path, capsys):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": "no text column here"}])
    assert cli_main(["serve", "--dataset", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "'text'" in err and "HINT:" in err


def test_a_mixture_is_served_and_rewinds_exactly(tmp_path):
    from hfstream.mixing.documents import MixedSource

    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"alpha {i}"} for i in range(7)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"beta {i}"} for i in range(5)])
    streams = [{"dataset": str(a), "proportion": 0.7}, {"dataset": str(b), "proportion": 0.3}]
    with MixedSource(streams, epoch_size=20, seed=3, epochs=None) as mixture, \
            ServerThread(mixture, ServerConfig(port=0, sequence_length=0)) as server, \
            EirClient(server.url) as client:
        first = client.get_data(50)
        client.reset()
        assert client.get_data(50) == first
    texts = [s["inputs"]["text_output"] for s in first]
    assert {t.split()[0] for t in texts} == {"alpha", "beta"}  # both streams, mixed
