"""The local hub's HTTP side: routes of the hub API that huggingface_hub and datasets call, with faults."""

from __future__ import annotations

import http.server
import io
import json
import logging
import re
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from hfstream.testing.hub_repo import Commit, HubRepo
from hfstream.testing.traffic import Plan, RequestRecord, Traffic

logger = logging.getLogger(__name__)

TREE_PAGE_SIZE = 1000  # entries per tree page, as the hub (50 when expand=true)
TREE_PAGE_SIZE_EXPANDED = 50


class HubServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 that holds the hub's state for its handlers."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], repos: dict[str, HubRepo], traffic: Traffic):
        super().__init__(address, HubHandler)
        self.repos = repos
        self.traffic = traffic
        self.token: str | None = None
        self.tree_page_size = TREE_PAGE_SIZE
        self.cdn_redirects: str | None = None  # regex of paths that resolve redirects to the "CDN"
        self.connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        """The "CDN" origin: this server under another host name, so clients treat it as off the hub."""
        return f"http://localhost:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a worker killed or finished with a kept-alive connection) is
        routine: logged at debug level, not printed as a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            logger.debug("local hub: %s went away", client_address)
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Close every open connection (kept-alive ones included), so that no handler lingers."""
        for sock in list(self.connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HubHandler(http.server.BaseHTTPRequestHandler):
    """Answers one connection's requests: repo info, tree, paths-info and resolve (with Range)."""

    protocol_version = "HTTP/1.1"
    server: HubServer

    def setup(self) -> None:
        super().setup()
        # No Nagle: a small write (the headers) must not wait for the client's delayed ACK, which
        # costs ~40 ms per request on loopback; real hubs and CDNs add no such pause.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        logger.debug("local hub: " + format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # -- dispatch ------------------------------------------------------------------------------

    def _handle(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        endpoint, repo, rest = self._route(segments)
        traffic = self.server.traffic
        self.record = traffic.record(RequestRecord(self.command, unquote(url.path), endpoint,
                                                   range=self.headers.get("Range"),
                                                   authorization="Authorization" in self.headers))
        plan = traffic.plan(self.command, unquote(url.path))
        traffic.sleep(plan.stall.seconds if plan.stall else 0.0)
        body = self._read_request_body()
        if plan.fail is not None:
            rule = plan.fail
            return self._error(rule.status, f"injected HTTP {rule.status}", headers=rule.headers)
        if not endpoint.startswith("cdn:") and self._refused_without_token():
            return None  # (a CDN url is signed: no token needed)
        if endpoint == "other":
            return self._error(404, "Sorry, we can't find the page you are looking for.")
        if repo is None:
            # The hub answers 401 to an anonymous request for a repo it does not show, 404 otherwise.
            status = 404 if self.headers.get("Authorization") else 401
            return self._error(status, "Repository not found", code="RepoNotFound")
        return self._dispatch(endpoint, repo, rest, body)

    def _route(self, segments: list[str]) -> tuple[str, HubRepo | None, list[str]]:
        """(endpoint name, repo or None if unknown, the segments after the repo id)."""
        if segments[:2] == ["api", "datasets"] and len(segments) > 2:
            repo, rest = self._split_repo(segments[2:])
            kind = rest[0] if rest else "info"
            known = {"info": "info", "revision": "info", "tree": "tree", "paths-info": "paths-info",
                     "refs": "refs", "parquet": "parquet"}
            return known.get(kind, "other"), repo, rest
        if segments[:1] == ["datasets"] and "resolve" in segments[2:4]:
            repo, rest = self._split_repo(segments[1:])
            return f"resolve:{self.command}", repo, rest
        if segments[:1] == ["_cdn"] and len(segments) > 3:
            repo, rest = self._split_repo(segments[1:])
            return f"cdn:{self.command}", repo, ["resolve", *rest]
        return "other", None, []

    def _split_repo(self, segments: list[str]) -> tuple[HubRepo | None, list[str]]:
        repos = self.server.repos
        if "/".join(segments[:2]) in repos:
            return repos["/".join(segments[:2])], segments[2:]
        if segments[0] in repos:
            return repos[segments[0]], segments[1:]
        return None, segments[2:]

    def _dispatch(self, endpoint: str, repo: HubRepo, rest: list[str], body: bytes) -> None:
        if endpoint == "refs":
            return self._json(200, {"branches": [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                                                 for name, sha in repo.branches.items()],
                                    "converts": [], "tags": []})
        if endpoint == "parquet":
            # No parquet conversion here (as for a repo the hub has not converted).
            return self._error(404, "Not found: no parquet conversion for this repo")
        revision = rest[1] if len(rest) > 1 else "main"
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        if endpoint == "info":
            return self._json(200, repo.info(commit, blobs=self.query.get("blobs") == "true"))
        if endpoint == "tree":
            return self._tree(repo, commit, "/".join(rest[2:]))
        if endpoint == "paths-info":
            return self._paths_info(repo, commit, body)
        path = "/".join(rest[2:])
        pattern = self.server.cdn_redirects
        if endpoint.startswith("resolve:") and pattern and re.search(pattern, path) and path in commit.files:
            return self._redirect_to_cdn(repo, commit, path)
        return self._serve_file(repo, commit, path)

    # -- endpoints -----------------------------------------------------------------------------

    def _tree(self, repo: HubRepo, commit: Commit, folder: str) -> None:
        expand = self.query.get("expand", "false").lower() == "true"
        recursive = self.query.get("recursive", "false").lower() == "true"
        entries = repo.tree(commit, folder, recursive, expand)
        if entries is None:
            return self._error(404, f"Entry not found: {folder}", code="EntryNotFound",
                               headers={"X-Repo-Commit": commit.sha})
        page_size = TREE_PAGE_SIZE_EXPANDED if expand else self.server.tree_page_size
        start = int(self.query.get("cursor", "0"))
        headers = {}
        if start + page_size < len(entries):
            query = urlencode({**self.query, "cursor": start + page_size})
            headers["Link"] = f'<{self.server.url}{urlsplit(self.path).path}?{query}>; rel="next"'
        return self._json(200, entries[start:start + page_size], headers)

    def _paths_info(self, repo: HubRepo, commit: Commit, body: bytes) -> None:
        if self.headers.get("Content-Type", "").startswith("application/json"):
            form = json.loads(body or b"{}")
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:  # huggingface_hub posts a form: paths=a&paths=b&expand=false
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() == "true"
        entries = [repo.entry(commit, p.strip("/"), expand) for p in paths]
        return self._json(200, [e for e in entries if e is not None])

    def _serve_file(self, repo: HubRepo, commit: Commit, path: str) -> None:
        """A file's bytes (206 with Content-Range for a Range), with the hub's ETag and X-Repo-Commit."""
        local = commit.files.get(path)
        if local is None:
            return self._error(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.sha})
        size = local.stat().st_size
        headers = {"ETag": f'"{repo.oid(local)}"', "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        try:
            start, end, partial = _parse_range(self.headers.get("Range"), size)
        except ValueError:
            return self._error(416, "Requested Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
        if partial:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return self._send(206 if partial else 200, headers, (local, start, end - start),
                          file_key=f"{repo.repo_id}/{path}")

    def _redirect_to_cdn(self, repo: HubRepo, commit: Commit, path: str) -> None:
        """302 to the "CDN", as the hub answers for an LFS file: the metadata rides on the redirect."""
        local = commit.files[path]
        etag = f'"{repo.oid(local)}"'
        location = f"{self.server.cdn_url}/_cdn/{quote(repo.repo_id)}/{commit.sha}/{quote(path)}"
        self._send(302, {"Location": location, "X-Repo-Commit": commit.sha, "X-Linked-Etag": etag,
                         "X-Linked-Size": str(local.stat().st_size), "ETag": etag}, b"")

    # -- answers -------------------------------------------------------------------------------

    def _refused_without_token(self) -> bool:
        """Answer 401 (and say so) when a token is required and the request lacks it."""
        token = self.server.token
        given = self.headers.get("Authorization")
        if token is None or given == f"Bearer {token}":
            return False
        if given is None:  # as the hub answers an anonymous request for a private repo
            self._error(401, "Repository not found", code="RepoNotFound")
        else:
            self._error(401, "Invalid credentials in Authorization header")
        return True

    def _error(self, status: int, message: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json(status, {"error": message}, extra)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self._send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def _send(self, status: int, headers: dict[str, str], body: bytes | tuple[Path, int, int],
              file_key: str | None = None) -> None:
        """Send status, headers and (unless HEAD) the body, with the plan's cut / stall and the pace."""
        self.record.status = status
        length = len(body) if isinstance(body, bytes) else body[2]
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(length)}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        plan = self.server.traffic.plan(self.command, self.record.path, body_length=length)
        try:
            _write_body(self, body, plan, file_key)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-body

    def _read_request_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


def _write_body(handler: HubHandler, body: bytes | tuple[Path, int, int], plan: Plan, file_key: str | None) -> None:
    """Write the body in paced chunks, split where the plan stalls or cuts it."""
    traffic = handler.server.traffic
    source, length = (io.BytesIO(body), len(body)) if isinstance(body, bytes) else (open(body[0], "rb"), body[2])
    with source:
        source.seek(0 if isinstance(body, bytes) else body[1])
        sent = 0
        while sent < length:
            if plan.stall and plan.stall.after_bytes == sent:
                traffic.sleep(plan.stall.seconds)
            if plan.cut and plan.cut.after_bytes == sent:
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)  # the client sees a short body
                return
            next_stop = min([s for s in plan.body_stops() if s > sent] + [length])
            data = source.read(min(traffic.chunk_size(), next_stop - sent))
            traffic.pace(len(data))
            if file_key is not None:  # counted before the write: a client that has the bytes sees them counted
                traffic.count_body(handler.record, file_key, len(data))
            try:
                handler.wfile.write(data)
            except OSError:
                if file_key is not None:
                    traffic.count_body(handler.record, file_key, -len(data))
                raise
            sent += len(data)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str | None, size: int) -> tuple[int, int, bool]:
    """(start, end exclusive, partial) for a Range header; the whole file without a single valid range.

    Raises:
        ValueError: the range starts past the end of the file (answer 416).
    """
    match = _RANGE.match(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return 0, size, False  # no Range, or several ranges: the whole file (as RFC 9110 allows)
    first, last = match.groups()
    if not first:  # bytes=-N: the last N bytes
        if int(last) == 0 or size == 0:
            raise ValueError(f"range {header} of a {size}-byte file")
        return max(0, size - int(last)), size, True
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise ValueError(f"range {header} of a {size}-byte file")
    return start, end, True
