"""API keys: who may call which endpoint, checked before a request body is read.

Keys come from files (``--api-key-file``, ``--admin-key-file``), one per line: either the key itself or its
SHA-256 as ``sha256:<64 hex digits>`` (so a key file need not hold usable keys). Blank lines and lines starting with
``#`` are skipped; a UTF-8 byte-order mark is ignored; a file other users may read or write is loaded with a warning
(``chmod 600`` it), as ssh warns about a private key. Only digests are kept in memory; a presented key is hashed and compared with every digest in
constant time (:func:`hmac.compare_digest`, no early exit), so neither the key nor its position leaks through timing.

A client sends its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

* With API keys set, every endpoint but ``GET /health`` needs one (``/metrics`` and ``/openapi.json`` included).
* With admin keys set, the index-changing endpoints (build, add, remove) need an admin key; an admin key is also
  accepted wherever an API key is. Admin keys alone leave the other endpoints open.
* ``/health`` stays open for load balancers; without a key it says only whether the server is up and which
  pipeline it serves.

A missing or wrong key is a 401 (with ``WWW-Authenticate: Bearer``), an API key on an admin endpoint a 403, both in
the protocol's error shape.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpi.errors import InvalidConfigError
from hpi.serving.limits import Receive, Scope, Send, error_body

logger = logging.getLogger(__name__)

MIN_KEY_LENGTH = 16
_DIGEST_RE = re.compile(r"^sha256:([0-9a-fA-F]{64})$")

USER = "user"
ADMIN = "admin"


def key_digest(key: str) -> str:
    """The SHA-256 of a key, as the lowercase hex digits a key file may hold after ``sha256:``.

    >>> key_digest("correct horse battery staple")[:16]
    'c4bbcb1fbec99d65'
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_keys(lines: Iterable[str], source: str) -> frozenset[str]:
    """The digests of a key file's lines (keys, or ``sha256:`` digests); ``source`` names the file in errors."""
    digests = set()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _DIGEST_RE.match(line)
        if match:
            digests.add(match.group(1).lower())
            continue
        if len(line) < MIN_KEY_LENGTH or any(c.isspace() for c in line):
            raise InvalidConfigError(
                f"{source}, line {number}: a key must be at least {MIN_KEY_LENGTH} characters without spaces, or "
                "'sha256:' followed by 64 hex digits"
            )
        digests.add(key_digest(line))
    if not digests:
        raise InvalidConfigError(f"{source} holds no key (one key or sha256:<hex digest> per line)")
    return frozenset(digests)


def load_key_file(path: str | os.PathLike[str]) -> frozenset[str]:
    """The key digests of a key file.

    Raises:
        InvalidConfigError: the file cannot be read, holds no key, or a line is neither a key nor a digest.
    """
    path = Path(path).expanduser()
    try:
        # utf-8-sig drops the byte-order mark some editors write first, which would otherwise become part of the
        # first key (a key that then never matches)
        text = path.read_text(encoding="utf-8-sig")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"cannot read the key file {path}: {exc}") from exc
    if mode & 0o077:
        # As ssh does for a private key: anyone else on the machine who can read the file can use the keys.
        logger.warning("the key file %s is readable or writable by other users (mode %s); restrict it with: "
                       "chmod 600 %s", path, oct(mode & 0o777), path)
    return parse_keys(text.splitlines(), str(path))


@dataclass(frozen=True)
class AuthConfig:
    """Digests of the keys the server accepts. Both empty: no authentication (the default, for loopback)."""

    api_key_digests: frozenset[str] = field(default_factory=frozenset)  # any endpoint but /health
    admin_key_digests: frozenset[str] = field(default_factory=frozenset)  # index changes; also any endpoint

    def __post_init__(self) -> None:
        for name in ("api_key_digests", "admin_key_digests"):
            for digest in getattr(self, name):
                if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                    raise InvalidConfigError(f"AuthConfig.{name}: {str(digest)[:80]!r} is not a lowercase SHA-256 "
                                             "hex digest; use key_digest(key) or load_key_file(path)")

    @classmethod
    def from_files(cls, api_key_file: str | None = None, admin_key_file: str | None = None) -> AuthConfig:
        return cls(api_key_digests=load_key_file(api_key_file) if api_key_file else frozenset(),
                   admin_key_digests=load_key_file(admin_key_file) if admin_key_file else frozenset())

    @property
    def enabled(self) -> bool:
        return bool(self.api_key_digests or self.admin_key_digests)

    def role_of(self, key: str | None) -> str | None:
        """``"admin"``, ``"user"`` or None for a presented key; every digest is compared, whatever matches."""
        if not key:
            return None
        presented = key_digest(key)
        admin = _matches(presented, self.admin_key_digests)
        user = _matches(presented, self.api_key_digests)
        return ADMIN if admin else USER if user else None


def _matches(presented: str, digests: frozenset[str]) -> bool:
    found = False
    for digest in digests:
        found |= hmac.compare_digest(presented, digest)
    return found


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key of ``Authorization: Bearer <key>``, else of ``X-API-Key``, else None."""
    bearer = api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip() or None
    return bearer or api_key


class AuthMiddleware:
    """ASGI middleware that answers 401/403 before the app (or the body limit) sees a request without the key it
    needs, and records the caller's role as ``scope["state"]["auth_role"]`` for the endpoints.

    Args:
        app: the inner ASGI app.
        auth: the accepted key digests.
        open_paths: paths anyone may call (``/health``).
        admin_paths: paths that need an admin key when admin keys are set.
    """

    def __init__(self, app: Any, auth: AuthConfig, *, open_paths: Iterable[str], admin_paths: Iterable[str]) -> None:
        self.app = app
        self.auth = auth
        self.open_paths = frozenset(open_paths)
        self.admin_paths = frozenset(admin_paths)

    def required_role(self, path: str) -> str | None:
        if path in self.open_paths:
            return None
        if path in self.admin_paths and self.auth.admin_key_digests:
            return ADMIN
        return USER if self.auth.api_key_digests else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.auth.enabled:
            await self.app(scope, receive, send)
            return
        role = self.auth.role_of(presented_key(scope.get("headers", ())))
        scope.setdefault("state", {})["auth_role"] = role
        needed = self.required_role(scope.get("path", ""))
        if needed is None or role == ADMIN or (needed == USER and role == USER):
            await self.app(scope, receive, send)
            return
        log_id = scope["state"].get("log_id")
        scope["state"]["refusal"] = "unauthorized" if role is None else "forbidden"
        if role is None:
            status, message = 401, ("missing or wrong API key; send it as 'Authorization: Bearer <key>' or "
                                    "'X-API-Key: <key>'")
        else:
            status, message = 403, f"{scope.get('path', '')} changes indexes and needs an admin key"
        body = error_body(status, message, log_id)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="hpi"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
