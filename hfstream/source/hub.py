"""A hub dataset resolved once: the commit it is read at, and the data files ``datasets`` would read.

``resolve_hub(spec)`` asks the hub which commit the revision names (one API call; none when the
revision is already a commit sha), then which files the split reads at that commit, in
``datasets``' order. That second answer comes from ``datasets.load_dataset_builder`` run in a
one-shot child process (``python -m hfstream.worker.hub_files``: neither the parent nor the
worker imports ``datasets``) and is cached under ``$HFSTREAM_CACHE/hub`` by repo, config, split,
data_files and commit, so every rank and every restart after the first reuses it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson

from hfstream.errors import ERROR_TYPES, DatasetNotFoundError, HfStreamError, OfflineError, StateError
from hfstream.source.diskcache import cached_json
from hfstream.source.faults import is_refused, is_transient, refused_error, status_of
from hfstream.source.spec import SourceSpec

_SHA = re.compile(r"^[0-9a-f]{40}$")
RESOLVE_TIMEOUT_S = 600.0
CACHE_VERSION = 1


@dataclass(frozen=True)
class HubFiles:
    """What a hub split reads.

    Attributes:
        repo_id: the dataset id.
        sha: the commit everything is read at.
        builder: the ``datasets`` builder (``parquet``, ``json``, ``text``, ``csv``, ...).
        files: ``hf://datasets/<repo>@<sha>/<path>`` URLs, in the order ``datasets`` reads them.
        fast: whether hfstream's readers give the builder's rows (no builder options they lack).
        why_not_fast: when not, why (for the log).
    """

    repo_id: str
    sha: str
    builder: str
    files: list[str]
    fast: bool
    why_not_fast: str = ""


def resolve_hub(spec: SourceSpec, pinned: str | None = None, expected: str | None = None) -> HubFiles:
    """The files of ``spec``'s hub split at one commit (cached on disk).

    Args:
        pinned: read this commit (a restarted worker of the same run: the revision may have
            moved since, the run stays on its commit).
        expected: the commit a saved state was read at; the revision must still name it.

    Raises:
        OfflineError: the hub cannot be reached.
        AuthError: the hub refused the token (HTTP 401/403): names HF_TOKEN.
        DatasetNotFoundError: no such dataset or revision.
        StateError: ``expected`` is given and the revision now names another commit.
    """
    check_hub_reachable(spec.dataset)
    sha = pinned or commit_sha(spec)
    if expected is not None and sha != expected:
        raise StateError(
            f"the state was saved reading {spec.dataset!r} at commit {expected}, but revision "
            f"{spec.revision or 'main'!r} now names commit {sha}: the dataset changed since",
            f"pass revision={expected!r} (--revision {expected}) to resume on the data the state was saved "
            "on, or start fresh without the state to read the new revision")
    key = {"v": CACHE_VERSION, "repo": spec.dataset, "name": spec.name, "split": spec.split,
           "data_files": spec.data_files, "sha": sha,
           "fast_for": [spec.text_column, spec.sample_by]}  # what the fast/datasets choice depends on
    return HubFiles(**cached_json("hub", key, lambda: _ask_datasets(spec, sha)))


def commit_sha(spec: SourceSpec) -> str:
    """The commit sha that ``spec.revision`` (default ``main``) names now; a sha names itself."""
    if spec.revision and _SHA.match(spec.revision):
        return spec.revision
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        return api.dataset_info(spec.dataset, revision=spec.revision).sha
    except RevisionNotFoundError:
        raise DatasetNotFoundError(f"hub dataset {spec.dataset!r} has no revision {spec.revision!r}",
                                   "pass an existing branch, tag or commit sha as revision=") from None
    except Exception as exc:  # noqa: BLE001 - classified below
        if is_refused(exc):
            raise refused_error(exc, spec.dataset) from None
        if status_of(exc) == 404:
            raise DatasetNotFoundError(f"no dataset {spec.dataset!r} on the hub ({api.endpoint})",
                                       "check the id (org/name) on https://huggingface.co/datasets") from None
        raise


def _ask_datasets(spec: SourceSpec, sha: str) -> dict[str, Any]:
    """Run ``hfstream.worker.hub_files`` once and return its answer (or raise its error)."""
    cmd = [sys.executable, "-m", "hfstream.worker.hub_files", "--spec", spec.to_json(), "--revision", sha]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=RESOLVE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConnectionError(f"resolving the files of {spec.dataset!r} took over {RESOLVE_TIMEOUT_S:.0f}s") from None
    lines = done.stdout.strip().splitlines()
    answer = orjson.loads(lines[-1]) if lines else {}
    if "files" in answer:
        return answer
    error = answer.get("error") or {"type": "HfStreamError", "message": f"exited with code {done.returncode}"}
    if error.get("transient"):
        raise ConnectionError(error["message"])
    cls = ERROR_TYPES.get(error.get("type", ""), HfStreamError)
    tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
    hint = error.get("hint") or "\n".join(tail)
    raise cls(f"resolving the files of hub dataset {spec.dataset!r}: {error.get('message')}", hint)


def check_hub_reachable(dataset: str, timeout: float = 3.0) -> None:
    """Fail fast, with a useful message, when the hub cannot be reached.

    Raises:
        OfflineError: HF_HUB_OFFLINE is set, or no TCP connection to the hub endpoint.
    """
    hint = ("use local files instead (--dataset 'path/to/*.parquet', a directory, or a .jsonl file) "
            "or the built-in corpus builtin:python-docs; a mirror can be set with HF_ENDPOINT")
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise OfflineError(f"{dataset!r} is a hub dataset, but HF_HUB_OFFLINE is set", hint)
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # a proxy decides reachability; let the client try through it
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise OfflineError(
            f"{dataset!r} is not a local path, and the Hugging Face hub ({host}:{port}) cannot be "
            f"reached to stream it: {exc.__class__.__name__}: {exc}",
            f"you appear to be offline: {hint}") from None


def transient_or_error(exc: BaseException) -> dict[str, Any]:
    """How the one-shot child reports a failure: transient (the worker retries) or a typed error."""
    if is_transient(exc):
        return {"type": type(exc).__name__, "message": str(exc)[:500], "transient": True}
    if is_refused(exc):
        exc = refused_error(exc, "the hub dataset")
    return {"type": type(exc).__name__, "message": getattr(exc, "message", str(exc)),
            "hint": getattr(exc, "hint", None)}
