"""Settings of ``omnimargin serve``: the command line's flags, else the config file's
``[service]`` table, else environment variables ``OMNIMARGIN_SERVICE_<NAME>``, else defaults.

API keys come from ``api_keys`` (a list), from the environment variable named by
``api_keys_env`` (comma-separated) and from ``api_keys_file`` (one a line, ``#`` comments; re-read
when it changes, at most once a second, so keys are added and revoked without a restart; refused
when group or others may read it). They are compared in constant time and never logged.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from aggregator.errors import InputError
from aggregator.portfolio_file import first_error

log = logging.getLogger(__name__)

#: how often the key file is looked at (one stat), at most
KEY_FILE_CHECK_S = 1.0


def read_key_file(path: Path) -> list[bytes]:
    """The keys of ``path`` (one a line, blank lines and ``#`` lines skipped). An InputError
    naming ``service.api_keys_file`` if it cannot be read, is not a regular file or group or
    others may read it; the message never holds a key."""
    field = "service.api_keys_file"
    try:
        with path.open("rb") as f:
            info = os.fstat(f.fileno())  # the mode of the file read, not of a path swapped since
            if not stat.S_ISREG(info.st_mode):
                raise InputError(field, f"{path} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise InputError(
                    field,
                    f"{path} is open to group or others (mode {mode:04o}): run chmod 600 {path}",
                )
            raw = f.read()
    except OSError as exc:
        raise InputError(field, f"cannot read {path} ({exc.strerror})") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InputError(field, f"cannot read {path} (not UTF-8 text)") from None
    keys = (line.strip() for line in text.splitlines())
    return [k.encode() for k in keys if k and not k.startswith("#")]


class KeyFile:
    """The keys of an ``api_keys_file``, re-read when its inode, size, mtime or mode change
    (looked at with one ``stat`` at most every ``KEY_FILE_CHECK_S``). Fails closed: once the
    file cannot be read, or group or others may read it, none of its keys are accepted (and
    an error is logged) until it is fixed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen = self._signature()
        self.keys = read_key_file(path)  # at start-up a bad file is an error, not a log line
        self._checked = time.monotonic()

    def _signature(self) -> tuple[int, ...] | None:
        try:
            s = os.stat(self.path)
        except OSError:
            return None
        return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_mode)

    def current(self) -> list[bytes]:
        now = time.monotonic()
        if now - self._checked < KEY_FILE_CHECK_S:
            return self.keys
        with self._lock:
            if now - self._checked < KEY_FILE_CHECK_S:
                return self.keys
            self._checked = now
            seen = self._signature()
            if seen != self._seen:
                self._seen = seen
                try:
                    self.keys = read_key_file(self.path)
                    log.info("API key file re-read: %d keys", len(self.keys))
                except InputError as exc:
                    self.keys = []  # fail closed
                    log.error("API key file refused, none of its keys accepted: %s", exc)
        return self.keys


class ServiceSettings(BaseSettings):
    """Everything the service is told; built once at the entry point and passed down."""

    model_config = SettingsConfigDict(env_prefix="OMNIMARGIN_SERVICE_", extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    workers: Annotated[int, Field(ge=1, le=1024)] | None = None
    epoch_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    stale_after_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    read_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    api_keys: list[SecretStr] = Field(default_factory=list)
    api_keys_env: str | None = None
    api_keys_file: Path | None = None
    read_requires_key: bool = False
    watch_new_accounts: bool = True
    max_accounts: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    idle_epochs_before_unwatch: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    max_risk_scenarios: Annotated[int, Field(ge=1000, le=10_000_000)] = 1_000_000
    pnl_cache_mb: Annotated[float, Field(ge=0, le=1_000_000)] = 1024.0

    _key_file: KeyFile | None = PrivateAttr(default=None)

    def api_key_bytes(self) -> list[bytes]:
        """Every accepted API key (config list, the named environment variable, the key file
        as it is now)."""
        out = [k.get_secret_value().encode() for k in self.api_keys]
        if self.api_keys_env:
            raw = os.environ.get(self.api_keys_env, "")
            out += [k.strip().encode() for k in raw.split(",") if k.strip()]
        if self.api_keys_file is not None:
            if self._key_file is None:
                self._key_file = KeyFile(self.api_keys_file.expanduser())
            out += self._key_file.current()
        return out


def load_settings(table: dict[str, Any] | None, **flags: Any) -> ServiceSettings:
    """Settings from the config's ``[service]`` table, the environment and ``flags``
    (None flags are left out). A bad value is an InputError naming ``service.<field>``."""
    data = dict(table or {})
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        settings = ServiceSettings(**data)
    except ValidationError as exc:
        raise first_error(exc, "service") from None
    if settings.api_keys_env and not os.environ.get(settings.api_keys_env):
        raise InputError(
            "service.api_keys_env", f"environment variable {settings.api_keys_env} is not set"
        )
    if settings.api_keys_file is not None:
        settings.api_key_bytes()  # reads the key file now: a bad one stops the start
    return settings
