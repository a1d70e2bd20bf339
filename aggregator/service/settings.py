"""Settings of ``omnimargin serve``: the command line's flags, else the config file's
``[service]`` table, else environment variables ``OMNIMARGIN_SERVICE_<NAME>``, else defaults.

API keys come from ``api_keys`` (a list) or from the environment variable named by
``api_keys_env`` (comma-separated); they are compared in constant time and never logged.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from aggregator.errors import InputError
from aggregator.portfolio_file import first_error


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
    read_requires_key: bool = False
    watch_new_accounts: bool = True
    max_accounts: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    idle_epochs_before_unwatch: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    max_risk_scenarios: Annotated[int, Field(ge=1000, le=10_000_000)] = 1_000_000
    pnl_cache_mb: Annotated[float, Field(ge=0, le=1_000_000)] = 1024.0

    def api_key_bytes(self) -> list[bytes]:
        """Every accepted API key (config list and the named environment variable)."""
        out = [k.get_secret_value().encode() for k in self.api_keys]
        if self.api_keys_env:
            raw = os.environ.get(self.api_keys_env, "")
            out += [k.strip().encode() for k in raw.split(",") if k.strip()]
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
    return settings
