"""The local hub's repositories: files per commit, branch heads, and the hub's JSON for them."""

from __future__ import annotations

import functools
import hashlib
import itertools
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from hfstream.errors import ConfigError, DatasetNotFoundError

#: what a pushed file may be: its bytes, its text, or a local file to serve as it is
FileContent = Union[bytes, str, Path]

_COMMIT_DATE = "2024-01-01T00:00:00.000Z"  # fixed, so that repo info is the same run to run


@dataclass(frozen=True)
class Commit:
    """One commit of a repo: its sha and the local file behind each path in the repo."""

    sha: str
    title: str
    date: str
    files: Mapping[str, Path]

    @functools.cached_property
    def dirs(self) -> frozenset[str]:
        """Every folder of the commit ("" is the root)."""
        out = {""}
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
        return frozenset(out)


class HubRepo:
    """A dataset repository served from a local directory, with branches and commits.

    The first commit holds every file under ``directory`` (hidden files and folders left out);
    its sha is derived from the repo id and the file names and sizes, so it is the same every
    run. :meth:`push` makes a new commit on a branch; older commits stay resolvable by sha.

    Args:
        repo_id: ``namespace/name``, e.g. ``"HuggingFaceFW/fineweb"``.
        directory: the files of the first commit (not copied; they must not change while served).
        scratch: where pushed bytes are written (the hub's temporary folder).
    """

    def __init__(self, repo_id: str, directory: Path, scratch: Path):
        if not directory.is_dir():
            raise DatasetNotFoundError(f"local hub: no directory {str(directory)!r} for repo {repo_id!r}",
                                       "build it first, e.g. with hfstream.testing.fineweb.make_fineweb_like_repo")
        self.repo_id = repo_id
        self._scratch = scratch
        self._lock = threading.Lock()
        self._oids: dict[Path, str] = {}
        self._pushes = itertools.count(1)
        files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)}
        seed = repo_id + "".join(f"\n{name}:{path.stat().st_size}" for name, path in files.items())
        first = Commit(hashlib.sha1(seed.encode()).hexdigest(), "Initial commit", _COMMIT_DATE, files)
        self.commits: dict[str, Commit] = {first.sha: first}
        self.branches: dict[str, str] = {"main": first.sha}

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch name or a full sha names, or None."""
        with self._lock:
            sha = self.branches.get(revision, revision)
            return self.commits.get(sha)

    def push(self, files: Mapping[str, FileContent] | None = None, delete: Iterable[str] = (),
             message: str = "Update files", branch: str = "main") -> Commit:
        """Make a commit on ``branch`` (created from main if new) that adds, replaces or deletes files."""
        with self._lock:
            parent = self.commits[self.branches.get(branch, self.branches["main"])]
            tree = dict(parent.files)
            number = next(self._pushes)
            for name in delete:
                if tree.pop(name, None) is None:
                    raise ConfigError(f"local hub: cannot delete {name!r}: not in {self.repo_id}@{branch}",
                                      f"the files are: {', '.join(sorted(tree)[:10])}")
            for name, content in (files or {}).items():
                tree[name] = self._store(number, name, content)
            seed = f"{parent.sha}\n{number}\n{message}\n" + "\n".join(sorted(tree))
            commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), message,
                            datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), tree)
            self.commits[commit.sha] = commit
            self.branches[branch] = commit.sha
            return commit

    def _store(self, number: int, name: str, content: FileContent) -> Path:
        if isinstance(content, Path):
            return content
        path = self._scratch / self.repo_id / str(number) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def oid(self, local: Path) -> str:
        """The git blob sha1 of a local file (computed once, then cached)."""
        with self._lock:
            if local in self._oids:
                return self._oids[local]
        digest = hashlib.sha1(b"blob %d\0" % local.stat().st_size)
        with open(local, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        with self._lock:
            return self._oids.setdefault(local, digest.hexdigest())

    # -- JSON as the hub writes it -------------------------------------------------------------

    def entry(self, commit: Commit, path: str, expand: bool = False) -> dict[str, Any] | None:
        """The tree / paths-info entry of a file or folder, or None if the commit has no such path."""
        last_commit = {"lastCommit": {"id": commit.sha, "title": commit.title, "date": commit.date}}
        if path in commit.files:
            local = commit.files[path]
            out = {"type": "file", "oid": self.oid(local), "size": local.stat().st_size, "path": path}
        elif path and path in commit.dirs:
            tree_id = hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest()
            out = {"type": "directory", "oid": tree_id, "size": 0, "path": path}
        else:
            return None
        return {**out, **last_commit} if expand else out

    def tree(self, commit: Commit, folder: str, recursive: bool, expand: bool) -> list[dict[str, Any]] | None:
        """The entries under ``folder`` (all depths if ``recursive``), folders first; None if no folder."""
        if folder not in commit.dirs:
            return None
        prefix = folder + "/" if folder else ""
        below = sorted({p for p in commit.dirs | set(commit.files) if p.startswith(prefix) and p != folder})
        if not recursive:
            below = [p for p in below if "/" not in p[len(prefix):]]
        entries = [self.entry(commit, p, expand) for p in below]
        return sorted(entries, key=lambda e: (e["type"] != "directory", e["path"]))  # type: ignore[index]

    def info(self, commit: Commit, blobs: bool = False) -> dict[str, Any]:
        """The ``/api/datasets/{repo_id}`` answer: sha, siblings, cardData, and the usual fields."""
        siblings = []
        for name, local in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                sibling.update(size=local.stat().st_size, blobId=self.oid(local))
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24], "id": self.repo_id,
            "author": self.repo_id.split("/")[0], "sha": commit.sha, "lastModified": commit.date,
            "createdAt": _COMMIT_DATE, "private": False, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "cardData": self.card_data(commit),
            "siblings": siblings, "usedStorage": sum(p.stat().st_size for p in commit.files.values()),
        }

    @staticmethod
    def card_data(commit: Commit) -> dict[str, Any]:
        """The YAML front matter of the commit's README.md (the dataset card), or {}."""
        readme = commit.files.get("README.md")
        if readme is None:
            return {}
        text = readme.read_text(encoding="utf-8")
        if not text.startswith("---"):
            return {}
        import yaml

        front = text.split("---", 2)
        data = yaml.safe_load(front[1]) if len(front) == 3 else None
        return data if isinstance(data, dict) else {}
