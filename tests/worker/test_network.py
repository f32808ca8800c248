"""Remote files over HTTP from a real server on 127.0.0.1: transient failures are survived exactly."""

import http.server
import json
import threading

import pytest

from conftest import read_all
from hfstream.errors import DatasetNotFoundError

pytest.importorskip("aiohttp")  # datasets reads http:// data files through fsspec + aiohttp

DOCS = [f"doc {i}: " + "word " * (i % 50) for i in range(2000)]
BODY = "".join(json.dumps({"text": t}) + "\n" for t in DOCS).encode()


class FlakyServer:
    """Serves /d.jsonl; the first ``fail_first`` requests get 503, or the first GET is cut short."""

    def __init__(self, fail_first: int = 0, cut_first_get: bool = False):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _start(self, with_body: bool) -> None:
                server.requests += 1
                if self.path != "/d.jsonl":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.requests <= fail_first:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                if not with_body:
                    return
                if cut_first_get and not getattr(server, "cut_done", False):
                    server.cut_done = True
                    self.wfile.write(BODY[: len(BODY) // 3])  # then the connection drops
                    self.connection.close()
                    return
                self.wfile.write(BODY)

            def do_HEAD(self):
                self._start(with_body=False)

            def do_GET(self):
                self._start(with_body=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs):
        servers.append(FlakyServer(**kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_remote_jsonl_is_read_like_a_local_file(serve):
    server = serve()
    assert read_all(f"{server.url}/d.jsonl") == DOCS


def test_server_errors_at_open_are_retried_in_the_worker(serve):
    server = serve(fail_first=2)
    assert read_all(f"{server.url}/d.jsonl") == DOCS   # nothing lost or repeated
    assert server.requests > 2


def test_connection_cut_mid_transfer_loses_and_repeats_nothing(serve):
    server = serve(cut_first_get=True)
    assert read_all(f"{server.url}/d.jsonl", max_samples=1500) == DOCS[:1500]


def test_missing_remote_file_is_a_clear_error(serve):
    server = serve()
    with pytest.raises(DatasetNotFoundError, match="cannot open") as info:
        read_all(f"{server.url}/nope.jsonl")
    assert "HINT:" in str(info.value)


def test_a_transient_error_mid_stream_reopens_at_the_same_row(tmp_path):
    """The worker's retry wrapper around the real parquet reader, with a reset after two chunks."""
    from conftest import make_texts, write_parquet
    from hfstream.source.spec import SourceSpec
    from hfstream.worker.main import retrying
    from hfstream.worker.row_groups import RowGroupReader, layouts
    from hfstream.worker.rows import piece_shard_rows

    texts = make_texts(100)
    path = str(write_parquet(tmp_path / "d.parquet", texts, row_group_size=10))
    spec = SourceSpec(path)
    file_layouts = layouts([path])
    read = RowGroupReader([path], file_layouts, spec, read_ahead=True)
    opened = []

    def flaky_opener(epoch, start):
        opened.append(start)
        for n, chunk in enumerate(piece_shard_rows([file_layouts[0]["rows"]], spec, epoch, start, "files", read)):
            if len(opened) == 1 and n == 2:
                raise ConnectionResetError("connection reset by peer")
            yield chunk

    rows = [v for chunk in retrying(flaky_opener, max_retries=3, backoff_s=0.01)(0, 0) for v in chunk]
    assert rows == texts and opened == [0, 20]  # reopened exactly at the first undelivered row
