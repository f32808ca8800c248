"""A local Hugging Face hub on 127.0.0.1: dataset repos from local folders, with faults and counters.

The real ``huggingface_hub`` and ``datasets`` libraries talk to it through ``HF_ENDPOINT``: repo
info, tree listing, paths-info and ``resolve`` (HEAD and GET, with Range) are answered as the hub
answers them, with the sha of each branch's commit, ETags and the hub's error headers.

Usage::

    from hfstream.testing.fineweb import make_fineweb_like_repo
    from hfstream.testing.hub import LocalHub

    make_fineweb_like_repo(root / "HuggingFaceFW" / "fineweb")   # root/<namespace>/<name> = a repo
    with LocalHub(root) as hub:
        os.environ.update(hub.env())          # for subprocesses (the hfstream worker is one)
        corpus = HuggingFaceStreamingCorpus("HuggingFaceFW/fineweb", name="sample-10BT")
        hub.fail(r"/resolve/", status=503, times=2)      # the next 2 file requests get 503
        hub.cut(r"\\.parquet$", after_bytes=10_000)        # one body cut after 10 kB
        hub.stall(r"/api/", seconds=2)                    # one answer held back 2 s
        hub.require_token("hf_secret")                   # 401 without "Authorization: Bearer hf_secret"
        hub.bandwidth = 20e6                             # bytes/s over all connections
        hub.push_commit("HuggingFaceFW/fineweb", {"README.md": "..."})   # main moves to a new sha
        assert hub.bytes_served <= 1.05 * dataset_size

``huggingface_hub`` and ``datasets`` read ``HF_ENDPOINT`` when they are imported, so in the
process that imported them, setting it later has no effect. Three ways that work:

- a subprocess started with ``hub.env()`` in its environment (the hfstream worker inherits
  ``os.environ``: ``monkeypatch.setenv`` each of ``hub.env()`` before the corpus starts it);
- in-process, pass ``endpoint=hub.url`` explicitly: ``HfApi(endpoint=...)``,
  ``HfFileSystem(endpoint=...)``, ``hf_hub_download(..., endpoint=...)``;
- set ``os.environ`` from ``hub.env()`` before the first import of either library (a script).

``datasets.load_dataset`` has no endpoint argument: run it in a subprocess.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping

from hfstream.errors import ConfigError, DatasetNotFoundError
from hfstream.testing.hub_http import HubServer
from hfstream.testing.hub_repo import FileContent, HubRepo
from hfstream.testing.traffic import FaultRule, RequestRecord, Traffic

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class LocalHub:
    """A real HTTP server on 127.0.0.1 that serves dataset repos as the Hugging Face hub does.

    Args:
        root_dir: serve every ``root_dir/<namespace>/<name>`` folder as dataset repo
            ``<namespace>/<name>`` (hidden folders left out).
        repos: more repos, ``{repo_id: folder}``.
        host: the address to listen on.
        port: the port; 0 picks a free one.

    Use it as a context manager (or call :meth:`start` and :meth:`close`).
    """

    def __init__(self, root_dir: str | os.PathLike | None = None, *,
                 repos: Mapping[str, str | os.PathLike] | None = None, host: str = "127.0.0.1", port: int = 0):
        self._scratch = tempfile.TemporaryDirectory(prefix="hfstream-hub-")
        self._traffic = Traffic()
        self._repos: dict[str, HubRepo] = {}
        self._server = HubServer((host, port), self._repos, self._traffic)
        self._thread: threading.Thread | None = None
        if root_dir is not None:
            root = Path(root_dir)
            if not root.is_dir():
                raise DatasetNotFoundError(f"local hub: no directory {str(root)!r}",
                                           "pass a folder that holds <namespace>/<name> repo folders")
            for folder in sorted(p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
                self.add_repo(folder.relative_to(root).as_posix(), folder)
        for repo_id, folder in (repos or {}).items():
            self.add_repo(repo_id, folder)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "LocalHub":
        """Start serving in a background thread (idempotent)."""
        if self._thread is None:
            # A short poll interval: shutdown() waits for the loop's next poll.
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="local-hub",
                                            daemon=True)
            self._thread.start()
            logger.info("local hub at %s serving %s", self.url, ", ".join(self._repos) or "no repo")
        return self

    def close(self) -> None:
        """Stop serving, end stalls, drop open connections and remove pushed files."""
        self._traffic.closing.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.drop_connections()
        self._server.server_close()
        self._scratch.cleanup()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the value for ``HF_ENDPOINT``."""
        return self._server.url

    def env(self, token: str | None = None) -> dict[str, str]:
        """Environment variables that point huggingface_hub and datasets at this hub.

        Args:
            token: also set ``HF_TOKEN`` (sent as ``Authorization: Bearer``); by default no
                token is sent, not even one saved by ``hf auth login``.
        """
        out = {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
        if token is not None:
            out["HF_TOKEN"] = token
        return out

    # -- repos ---------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, folder: str | os.PathLike) -> str:
        """Serve ``folder`` as dataset repo ``repo_id``; returns the sha of its main branch."""
        if not _REPO_ID.match(repo_id):
            raise ConfigError(f"local hub: bad repo id {repo_id!r}",
                              "use 'namespace/name', e.g. 'HuggingFaceFW/fineweb'")
        repo = HubRepo(repo_id, Path(folder), Path(self._scratch.name))
        self._repos[repo_id] = repo
        return repo.branches["main"]

    def sha(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha that ``revision`` (a branch or a sha) names."""
        commit = self._repo(repo_id).resolve(revision)
        if commit is None:
            raise ConfigError(f"local hub: {repo_id} has no revision {revision!r}",
                              f"the branches are: {', '.join(self._repo(repo_id).branches)}")
        return commit.sha

    def push_commit(self, repo_id: str, files: Mapping[str, FileContent] | None = None, delete: Iterable[str] = (),
                    message: str = "Update files", branch: str = "main") -> str:
        """Make a new commit on ``branch`` (the branch moves; older shas still resolve).

        Args:
            repo_id: a repo this hub serves.
            files: ``{path in repo: bytes | str | local Path}`` to add or replace.
            delete: paths in repo to remove.
            message: the commit title.
            branch: the branch to move (a new one starts from main).

        Returns:
            The new commit's sha.
        """
        return self._repo(repo_id).push(files, delete, message, branch).sha

    def _repo(self, repo_id: str) -> HubRepo:
        if repo_id not in self._repos:
            raise ConfigError(f"local hub: no repo {repo_id!r}", f"the repos are: {', '.join(self._repos) or 'none'}")
        return self._repos[repo_id]

    # -- faults and limits ---------------------------------------------------------------------

    def fail(self, pattern: str, status: int = 503, times: int | None = 1, methods: str | Iterable[str] = (),
             headers: Mapping[str, str] | None = None) -> FaultRule:
        """Answer ``status`` (503, 429, 500, 403...) with a JSON error to the next ``times`` matching requests.

        Args:
            pattern: regular expression searched in the decoded request path.
            status: the HTTP status to answer.
            times: how many requests; None: every one until :meth:`clear_faults`.
            methods: only these methods (``"GET"``, ``"HEAD"``, ``"POST"``); empty: all.
            headers: extra response headers, e.g. ``{"Retry-After": "1"}`` or ``{"X-Error-Code": "GatedRepo"}``.
        """
        return self._traffic.add(FaultRule("fail", pattern, times, _methods(methods), status=status,
                                           headers=dict(headers or {})))

    def cut(self, pattern: str, after_bytes: int, times: int | None = 1) -> FaultRule:
        """Drop the connection after ``after_bytes`` bytes of the body, for the next ``times`` matching GETs.

        Headers announce the full Content-Length, so the client sees a body that ends early.
        Only bodies longer than ``after_bytes`` count: a short one (a footer read) passes and
        does not use up the rule.

        Args:
            pattern: regular expression searched in the decoded request path.
            after_bytes: body bytes sent before the cut.
            times: how many bodies to cut; None: every one until :meth:`clear_faults`.
        """
        return self._traffic.add(FaultRule("cut", pattern, times, ("GET", "POST"), after_bytes=after_bytes))

    def stall(self, pattern: str, seconds: float, after_bytes: int | None = None, times: int | None = 1,
              methods: str | Iterable[str] = ()) -> FaultRule:
        """Hold back the answer: sleep ``seconds`` before it, or after ``after_bytes`` bytes of its body.

        A server shutdown ends a stall at once, so a long one costs a test nothing.

        Args:
            pattern: regular expression searched in the decoded request path.
            seconds: how long.
            after_bytes: None: before the status line; else mid-body (only for longer bodies).
            times: how many requests; None: every one until :meth:`clear_faults`.
            methods: only these methods; empty: all.
        """
        return self._traffic.add(FaultRule("stall", pattern, times, _methods(methods), after_bytes=after_bytes,
                                           seconds=seconds))

    def clear_faults(self) -> None:
        """Remove every fault rule (a token requirement and the bandwidth cap stay)."""
        self._traffic.clear()

    def require_token(self, token: str | None) -> None:
        """Answer 401 to requests without ``Authorization: Bearer <token>``; None: open to all.

        Without the header, the answer is the hub's for a private repo (``X-Error-Code:
        RepoNotFound``); with another token, ``Invalid credentials in Authorization header``.
        """
        self._server.token = token

    @property
    def bandwidth(self) -> float | None:
        """The cap on body bytes/s over all connections together; None: unlimited."""
        return self._traffic.bandwidth

    @bandwidth.setter
    def bandwidth(self, bytes_per_s: float | None) -> None:
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ConfigError(f"local hub: bandwidth must be > 0 bytes/s, got {bytes_per_s}", "or None for no cap")
        self._traffic.bandwidth = bytes_per_s

    @property
    def tree_page_size(self) -> int:
        """Entries per page of a tree listing (the hub's 1000); lower it to test pagination."""
        return self._server.tree_page_size

    @tree_page_size.setter
    def tree_page_size(self, size: int) -> None:
        self._server.tree_page_size = size

    @property
    def cdn_redirects(self) -> str | None:
        """A regex of repo paths whose ``resolve`` answers 302 to a "CDN" url, as the hub does for LFS files.

        The CDN is this server under the host name ``localhost`` (another origin, so clients
        drop the token and do not follow a HEAD there); its requests count as ``cdn:GET``.
        None (the default): every file is served by ``resolve`` itself.
        """
        return self._server.cdn_redirects

    @cdn_redirects.setter
    def cdn_redirects(self, pattern: str | None) -> None:
        self._server.cdn_redirects = pattern

    # -- counters ------------------------------------------------------------------------------

    @property
    def bytes_served(self) -> int:
        """Bytes of file bodies (``resolve`` GETs) written to clients since the last reset."""
        return self._traffic.bytes_served

    @property
    def bytes_by_file(self) -> dict[str, int]:
        """Bytes of file bodies served per ``repo_id/path``."""
        return dict(self._traffic.bytes_by_file)

    @property
    def requests(self) -> dict[str, int]:
        """Requests per endpoint: info, tree, paths-info, refs, parquet, resolve:HEAD, resolve:GET, cdn:GET, other."""
        return dict(self._traffic.requests)

    @property
    def log(self) -> list[RequestRecord]:
        """Every request since the last reset: method, path, endpoint, status, Range, body bytes."""
        return list(self._traffic.log)

    def reset_counters(self) -> None:
        """Zero the byte and request counters and clear the log."""
        self._traffic.reset_counters()


def _methods(methods: str | Iterable[str]) -> tuple[str, ...]:
    """``"GET"`` or ``["GET", "HEAD"]`` as an upper-case tuple."""
    return tuple(m.upper() for m in ([methods] if isinstance(methods, str) else methods))
