"""Sign in with a provider: the authorization-code flow against the loopback fake.

Two figures, part of the ``oidc`` group:

* **oidc_code_flow_misbehaviours_granted**: one sign-in per misbehaviour of
  :class:`tokenflow.testing.oidc.Misbehaviour` (wrong state, mix-up, another
  nonce or audience, ``alg: none``, a token endpoint that answers 500, hangs,
  redirects or sends 10 MB...): how many of them end signed in. Goal: 0.
* **oidc_code_login_ms**: a whole sign-in, start + provider + callback (token
  exchange included), over real HTTP on 127.0.0.1, median of the runs, with
  its breakdown: sealing the transaction and building the URL (start), the
  fake provider's consent (the browser's round trip, not tokenflow's work),
  and the callback (transaction, token request, ID token, new session), of
  which the token request alone. No goal: logins are rare.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import httpx

from tokenflow import (
    AuthorizationCodeCredentials,
    Flow,
    KeyRing,
    ProviderRedirect,
    Reissue,
    Request,
    oidc,
)
from tokenflow.oidc import Fetched
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeUserDirectory
from tokenflow.testing.oidc import FakeAuthorizationServer, FakeClient, Misbehaviour

from ._harness import Report, Settings, format_table

__all__ = ["MISBEHAVIOURS_GOAL", "run"]

GROUP: Final = "oidc"
MISBEHAVIOURS_GOAL: Final = 0
CLIENT_ID: Final = "bench-app"
SECRET: Final = "bench-secret"
REDIRECT: Final = "http://127.0.0.1:9/auth/oidc/fake/callback"


class _TimedSource(oidc.HttpKeySetSource):
    """The default source, timing its token requests."""

    def __init__(self) -> None:
        super().__init__(timeout=1.0, allow_loopback_http=True)
        self.post_ns = 0

    def post(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Fetched:
        began = time.perf_counter_ns()
        try:
            return super().post(url, form, headers)
        finally:
            self.post_ns = time.perf_counter_ns() - began


def _flow(server: FakeAuthorizationServer) -> tuple[Flow, _TimedSource]:
    source = _TimedSource()
    verifier = oidc.oidc(server.issuer, client_ids=[CLIENT_ID], source=source)
    client = oidc.code_flow(
        verifier,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        redirect_uri=REDIRECT,
        source=source,
        allow_loopback_http=True,
    )
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        FakeUserDirectory(allow_signup=True),
        external={"fake": client},
    )
    return flow, source


def _sign_in(
    flow: Flow, server: FakeAuthorizationServer, misbehaviour: Misbehaviour, browser: httpx.Client
) -> tuple[object, dict[str, float]]:
    """One sign-in; the decision and the milliseconds of each part."""
    # Set before the start: some misbehaviours are in discovery, fetched then.
    server.misbehaviour = misbehaviour
    began = time.perf_counter_ns()
    redirect = flow.start_provider_login(Request("GET"), "fake", next_path="/")
    started = time.perf_counter_ns()
    if not isinstance(redirect, ProviderRedirect):
        return redirect, {}
    answer = browser.get(redirect.location)
    consented = time.perf_counter_ns()
    query = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    cookies = "; ".join(c.split(";", 1)[0] for c in redirect.set_cookies)
    credentials = AuthorizationCodeCredentials(
        "fake", query.get("code"), query.get("state"), query.get("iss"), query.get("error")
    )
    decision = flow.login(Request("GET", cookie_header=cookies, credentials=credentials))
    finished = time.perf_counter_ns()
    return decision, {
        "start": (started - began) / 1e6,
        "provider": (consented - started) / 1e6,
        "callback": (finished - consented) / 1e6,
        "total": (finished - began) / 1e6,
    }


def run(settings: Settings, report: Report) -> None:
    """Run both figures; print them and add them to ``report``."""
    runs = 5 if settings.quick else max(30, settings.rounds * 3)
    with FakeAuthorizationServer() as server, httpx.Client(follow_redirects=False) as browser:
        server.register(FakeClient(CLIENT_ID, (REDIRECT,), "client_secret_basic", SECRET))
        granted: list[str] = []
        for misbehaviour in Misbehaviour:
            if misbehaviour is Misbehaviour.NONE:
                continue
            flow, _ = _flow(server)
            decision, _parts = _sign_in(flow, server, misbehaviour, browser)
            if isinstance(decision, Reissue):
                granted.append(misbehaviour.value)
        flow, source = _flow(server)
        samples: list[dict[str, float]] = []
        for _ in range(runs + 1):
            decision, parts = _sign_in(flow, server, Misbehaviour.NONE, browser)
            if not isinstance(decision, Reissue):
                raise AssertionError(f"a well-behaved sign-in gave {decision!r}")
            parts["token_request"] = source.post_ns / 1e6
            samples.append(parts)
        samples = samples[1:]  # the first one fetched discovery and keys
    tested = len(Misbehaviour) - 1
    medians: dict[str, Any] = {}
    rows = []
    for part in ("start", "provider", "callback", "token_request", "total"):
        values = sorted(s[part] for s in samples)
        median = statistics.median(values)
        medians[part] = round(median, 3)
        spread = (values[-1] - values[0]) / median * 100 if median else 0.0
        rows.append(
            [part, f"{median:.3f}", f"{values[0]:.3f}", f"{values[-1]:.3f}", f"{spread:.0f}%"]
        )
    print(f"\nsign in with a provider: {runs} whole sign-ins against the loopback fake, ms")
    if settings.quick:
        print("QUICK MODE: few runs; do not quote these figures.")
    print(format_table(["part", "median ms", "min ms", "max ms", "spread"], rows, "lrrrr"))
    verdict = "PASS" if len(granted) <= MISBEHAVIOURS_GOAL else "MISS"
    print(
        f"oidc_code_flow_misbehaviours_granted = {len(granted)} of {tested} "
        f"(goal {MISBEHAVIOURS_GOAL}: {verdict}){': ' + ', '.join(granted) if granted else ''}"
    )
    print(f"oidc_code_login_ms = {medians['total']:.3f}  (no goal; breakdown above)")
    report.add_detail(
        GROUP,
        "code_flow",
        {
            "runs": runs,
            "median_ms": medians,
            "misbehaviours_tested": tested,
            "misbehaviours_granted": granted,
        },
    )
    report.add_key("oidc_code_flow_misbehaviours_granted", len(granted))
    report.add_key("oidc_code_login_ms", medians["total"])
