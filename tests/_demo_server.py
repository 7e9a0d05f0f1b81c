"""The web demo served by uvicorn in a thread of its own, for the real-browser suites.

Both sockets (the demo site and its attacker page) are bound on 127.0.0.1 before
the demo is built, so that the demo knows both origins; ``make`` builds it from
them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from tokenflow._webdemo import WebDemo, bind, origin_of, serve


class DemoServer:
    """The web demo, built by ``make(site, attacker)``, served on 127.0.0.1."""

    def __init__(self, make: Callable[[str, str], WebDemo], name: str = "web-demo") -> None:
        self._site_sock = bind(0)
        self._attacker_sock = bind(0)
        self.site = origin_of(self._site_sock)
        self.attacker = origin_of(self._attacker_sock)
        self.demo = make(self.site, self.attacker)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(
                self.demo,
                self._site_sock,
                self._attacker_sock,
                stop=self._stop,
                started=self._ready.set,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the demo server did not start within 10 s"
        assert self._failure is None, f"the demo server failed: {self._failure!r}"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._site_sock.close()
        self._attacker_sock.close()

    def journal(self, after: int = 0) -> list[dict[str, Any]]:
        """The server's journal, read the way the page reads it."""
        url = f"{self.site}/demo/log?after={after}"  # http://127.0.0.1:PORT, built here
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
            entries: list[dict[str, Any]] = json.load(answer)["entries"]
        return entries

    def last_seq(self) -> int:
        entries = self.journal()
        return int(entries[-1]["seq"]) if entries else 0
