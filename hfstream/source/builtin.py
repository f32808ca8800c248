"""The built-in offline corpus: documentation that ships with every CPython, as JSON lines.

``builtin:python-docs`` works on any machine with no network and no third-party text in this
repository. Its documents are the language reference / library topics of ``pydoc_data``
(long English prose) and one document per standard-library module built from the docstrings
of the module, its classes and functions (read with ``ast``; nothing is imported). The text
depends on the Python version, so the file is generated once per version into the cache
directory (``$HFSTREAM_CACHE``, default ``~/.cache/hfstream``) and read like any JSON-lines file.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterator

import orjson

from hfstream.errors import DatasetNotFoundError

PREFIX = "builtin:"
#: name -> one-line description, as listed by ``hfstream datasets`` and in errors.
BUILTIN_DATASETS = {
    "python-docs": "CPython's own documentation: pydoc topics + standard-library docstrings",
}
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
              "lib2to3", "turtledemo", "__phello__", "ensurepip", "venv", "idlelib"}
_MIN_DOC_CHARS = 120


def is_builtin(dataset: str) -> bool:
    """True if ``dataset`` names a built-in corpus (``builtin:NAME``)."""
    return dataset.startswith(PREFIX)


def cache_dir() -> Path:
    """The directory generated corpora are kept in."""
    return Path(os.environ.get("HFSTREAM_CACHE") or Path.home() / ".cache" / "hfstream")


def builtin_path(dataset: str) -> Path:
    """Return the JSON-lines file of a built-in corpus, generating it on first use.

    Raises:
        DatasetNotFoundError: unknown built-in name.
    """
    name = dataset[len(PREFIX):]
    if name not in BUILTIN_DATASETS:
        raise DatasetNotFoundError(
            f"unknown built-in dataset {dataset!r}",
            f"built-in datasets are: {', '.join(PREFIX + n for n in BUILTIN_DATASETS)}")
    version = f"{sys.implementation.name}{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}"
    stdlib = sysconfig.get_paths()["stdlib"]
    key = hashlib.sha1(f"{version}|{stdlib}|v2".encode()).hexdigest()[:10]
    path = cache_dir() / f"{name}-{version}-{key}.jsonl"
    if not path.exists():
        _write_atomically(path, _python_docs(Path(stdlib)))
    return path


def _write_atomically(path: Path, docs: Iterator[dict]) -> None:
    # Several workers may generate at once: each writes its own temp file, rename wins.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for doc in docs:
                f.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _python_docs(stdlib: Path) -> Iterator[dict]:
    yield from _topic_docs()
    for source in sorted(_stdlib_sources(stdlib)):
        module = ".".join(source.relative_to(stdlib).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for qualname, text in _module_docs(source, module):
            if len(text) >= _MIN_DOC_CHARS:
                yield {"text": text, "source": f"stdlib:{qualname}"}


def _topic_docs() -> Iterator[dict]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # stripped Python builds may lack pydoc_data
        return
    for name in sorted(topics):
        text = topics[name].strip()
        if len(text) >= _MIN_DOC_CHARS:
            yield {"text": text + "\n", "source": f"pydoc:{name}"}


def _stdlib_sources(stdlib: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        for file in files:
            if file.endswith(".py") and not file.startswith("test_"):
                yield Path(root) / file


def _module_docs(source: Path, module: str) -> Iterator[tuple[str, str]]:
    """Yield (qualified name, text): the module docstring, then each public top-level class
    (with its methods' docstrings) and function, in source order."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (SyntaxError, ValueError, OSError):
        return
    doc = ast.get_docstring(tree)
    if doc:
        yield module, f"{module}\n{'=' * len(module)}\n\n{doc}\n"
    for node in tree.body:
        if not isinstance(node, _DEFS) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        kind = "class" if isinstance(node, ast.ClassDef) else "def"
        parts = [f"{kind} {module}.{node.name}\n\n{doc}"]
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                member_doc = ast.get_docstring(member) if isinstance(member, _DEFS) else None
                if member_doc and (not member.name.startswith("_") or member.name == "__init__"):
                    parts.append(f"{node.name}.{member.name}:\n{member_doc}")
        yield f"{module}.{node.name}", "\n\n".join(parts) + "\n"


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
