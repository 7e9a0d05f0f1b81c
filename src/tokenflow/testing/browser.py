"""A minimal browser for demos and tests: a cookie jar that speaks Set-Cookie.

It keeps what a real browser keeps for tokenflow's cookies: name and value,
dropped on ``Max-Age=0`` or when the Max-Age runs out on the given clock.
It is deliberately small: enough to drive whole flows (login, refresh, logout)
the way a browser would, not a general cookie implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .._model import Credentials, Request

__all__ = ["Browser"]


@dataclass
class Browser:
    """A cookie jar plus request builder.

    ``clock`` gives the jar's notion of now (cookie expiry by Max-Age);
    ``origin``/``host`` are what this browser sends on unsafe requests.
    """

    clock: Callable[[], float]
    host: str = "app.example"
    origin: str = "https://app.example"
    jar: dict[str, tuple[str, float]] = field(default_factory=dict)

    def receive(self, set_cookies: Iterable[str]) -> None:
        """Apply ``Set-Cookie`` header values, in order."""
        now = self.clock()
        for header in set_cookies:
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            max_age: float | None = None
            for attribute in attributes.split(";"):
                key, _, raw = attribute.strip().partition("=")
                if key.lower() == "max-age":
                    max_age = float(raw)
            if max_age is not None and max_age <= 0:
                self.jar.pop(name, None)
            else:
                self.jar[name] = (value, now + max_age if max_age is not None else float("inf"))

    def cookies(self) -> Mapping[str, str]:
        """The unexpired cookies a request would carry now."""
        now = self.clock()
        return {name: value for name, (value, expires) in self.jar.items() if now < expires}

    def cookie_header(self) -> str | None:
        """The ``Cookie`` request header, or ``None`` when the jar is empty."""
        cookies = self.cookies()
        if not cookies:
            return None
        return "; ".join(f"{name}={value}" for name, value in cookies.items())

    def request(
        self,
        method: str = "GET",
        *,
        credentials: Credentials | None = None,
        same_origin: bool = True,
        metadata: Mapping[str, str] | None = None,
    ) -> Request:
        """A request from this browser, as a same-origin page (or a cross-site one) sends it."""
        return Request(
            method=method,
            cookie_header=self.cookie_header(),
            credentials=credentials,
            sec_fetch_site="same-origin" if same_origin else "cross-site",
            origin=self.origin if method not in ("GET", "HEAD") else None,
            host=self.host,
            metadata=metadata or {},
        )

    def clone(self) -> Browser:
        """A second tab (or a thief) holding a copy of the same cookies."""
        return Browser(self.clock, self.host, self.origin, dict(self.jar))
