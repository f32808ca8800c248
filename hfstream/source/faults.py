"""What a failed remote read means: transient (retry at the same row), refused credentials, or neither."""

from __future__ import annotations

from hfstream.errors import AuthError, HfStreamError

#: exception class names (any library: httpx, aiohttp, botocore, fsspec, urllib3) worth retrying
TRANSIENT_NAMES = {"ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "ChunkedEncodingError",
                   "RemoteProtocolError", "ReadError", "ServerDisconnectedError", "ClientPayloadError",
                   "ClientConnectionError", "ServerTimeoutError", "IncompleteRead", "ProtocolError",
                   "ConnectionResetError", "ContentLengthError", "FSTimeoutError", "EndpointConnectionError",
                   "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError", "ResponseStreamingError"}

#: where each store takes its credentials from, for the message of a refused read
CREDENTIALS = {"s3": "the AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE)",
               "gs": "the Google credentials (GOOGLE_APPLICATION_CREDENTIALS or gcloud auth)",
               "gcs": "the Google credentials (GOOGLE_APPLICATION_CREDENTIALS or gcloud auth)"}


class TruncatedReadError(ConnectionError):
    """A range read that returned fewer bytes than the file holds there (a cut body)."""


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (httpx/requests ``response``, aiohttp ``status``), if any."""
    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """A network error worth retrying (not a data, configuration or credentials error)."""
    if isinstance(exc, HfStreamError) or is_refused(exc):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if {cls.__name__ for cls in type(exc).__mro__} & TRANSIENT_NAMES:
        return True
    status = status_of(exc)
    return status is not None and (status >= 500 or status in (408, 429))


def is_refused(exc: BaseException) -> bool:
    """The store refused the credentials: HTTP 401/403, a PermissionError, or the hub's
    "repository not found" for an anonymous or badly authenticated request."""
    if isinstance(exc, AuthError):
        return True
    if status_of(exc) in (401, 403) or isinstance(exc, PermissionError):
        return True
    return isinstance(exc, FileNotFoundError) and "repository not found" in str(exc).lower()


def refused_error(exc: BaseException, what: str) -> AuthError:
    """The clear error for a refused read of ``what`` (a hub id or a URL): which credentials to fix."""
    if isinstance(exc, AuthError):
        return exc
    scheme = what.split("://")[0] if "://" in what else "hf"
    status = status_of(exc)
    said = f"HTTP {status}" if status else type(exc).__name__
    if scheme in ("hf", "http", "https") and (scheme == "hf" or "/resolve/" in what or "huggingface" in what):
        return AuthError(
            f"the Hugging Face hub refused access to {what} ({said}): the token in HF_TOKEN (or the one "
            "saved by `hf auth login`) is missing, invalid or expired, or cannot read this repo (the hub "
            "also answers so for a repo that does not exist)",
            "set HF_TOKEN to a valid read token (https://huggingface.co/settings/tokens) and start again; "
            "for a gated dataset, accept its conditions on its hub page first; check the dataset id")
    credentials = CREDENTIALS.get(scheme, "the credentials the server expects")
    return AuthError(f"{what}: access refused ({said}: {str(exc).splitlines()[0][:160] if str(exc) else ''})",
                     f"check {credentials}")


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, for a log line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"

