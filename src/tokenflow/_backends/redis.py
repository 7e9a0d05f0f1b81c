"""Redis client checks shared by the Redis store and throttle."""

from __future__ import annotations

from typing import Any

from .._errors import ConfigError

__all__ = ["check_binary_client", "check_prefix"]


def check_binary_client(client: Any, name: str) -> None:
    """Raise ConfigError unless ``client`` returns raw bytes (``decode_responses=False``).

    Verifiers and salts are raw bytes: a client that decodes replies as UTF-8
    would fail on them (or worse, mangle them), at the first refresh.
    """
    encoder = getattr(client, "get_encoder", None)
    decodes = getattr(encoder(), "decode_responses", False) if callable(encoder) else False
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if decodes or kwargs.get("decode_responses"):
        raise ConfigError(
            f"{name} needs a Redis client with decode_responses=False: it stores raw bytes "
            "(verifiers, salts). Create a separate client for tokenflow"
        )


def check_prefix(prefix: object) -> str:
    """The key prefix, or ConfigError unless it is a non-empty str."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError("the Redis key prefix must be a non-empty string")
    return prefix
