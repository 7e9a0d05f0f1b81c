"""ID-token verification: a preset against joserfc alone, a kid storm, a whole login.

Three figures, with an offline fake of Google (keys served from memory):

* **oidc_verify_vs_jose**: ``oidc.google(...).verify_token`` on an RS256 ID
  token with the key set already cached, over joserfc's own
  ``jwt.decode`` + ``JWTClaimsRegistry.validate`` with the same key and the
  same checks (both issuer forms, the audience, ``exp`` and ``iat`` required,
  60 s leeway), interleaved in the same rounds. The registry of the joserfc
  contender is built once, outside the timed call; the preset builds one per
  call (its ``now`` is the flow's, per request), so the ratio, if anything,
  flatters joserfc. Goal: at most 1.10.
* **oidc_kid_storm_fetches**: 10,000 tokens, each with a random ``kid``,
  arriving within one refetch cooldown (from the moment the cooldown allows
  a refetch): how many key-set fetches they cause. Goal: at most 1.
* **oidc_login_us**: a whole ID-token login through ``Flow.decide`` (verify,
  link, load user, new session on a SQLite file, two cookies), per login.
"""

from __future__ import annotations

import json
import os
import random
import string
import tempfile
import time
from typing import Any, Final

from joserfc import jwt
from joserfc.jwk import JWKRegistry

import tokenflow
from tokenflow import ExternalTokenCredentials, Flow, KeyRing, Reissue, Request, oidc
from tokenflow.stores import SQLiteStore
from tokenflow.testing import FakeUserDirectory
from tokenflow.testing.oidc import FakeEndpoints, FakeKeySetSource, FakeProvider

from . import oidc_codeflow
from ._harness import Call, Case, Report, Settings, Stats, format_table, measure

__all__ = ["STORM_GOAL", "VERIFY_GOAL", "run"]

GROUP: Final = "oidc"
VERIFY_GOAL: Final = 1.10
"""The preset's verify may cost at most this many times joserfc's bare decode + validate."""
STORM_GOAL: Final = 1
"""Key-set fetches 10,000 random-kid tokens may cause within one cooldown."""
STORM_TOKENS: Final = 10_000
CLIENT: Final = "1234-bench.apps.googleusercontent.com"
KEYS: Final = "https://www.googleapis.com/oauth2/v3/certs"
LIBRARIES: Final = ("tokenflow", "joserfc", "cryptography", "httpx")


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _contenders(now: float) -> tuple[str, Call, Call, FakeProvider]:
    google = FakeProvider.google()
    endpoints = FakeEndpoints()
    endpoints.serve_provider(google, cache_control="public, max-age=21600")
    verifier = oidc.google([CLIENT], source=FakeKeySetSource(endpoints))
    token = google.id_token(now, audience=CLIENT)
    if verifier.verify_token(token, now=now) is None:  # also fills the cache
        raise AssertionError("the preset refused the reference token")

    key = JWKRegistry.import_key(google.jwks()["keys"][0])
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=60,
        iss={"essential": True, "values": ["https://accounts.google.com", "accounts.google.com"]},
        aud={"essential": True, "values": [CLIENT]},
        exp={"essential": True},
        iat={"essential": True},
    )
    algorithms = ["RS256"]

    def bare(token: str) -> dict[str, Any]:
        decoded = jwt.decode(token, key, algorithms=algorithms)
        registry.validate(decoded.claims)
        return decoded.claims

    identity = verifier.verify_token(token, now=now)
    if identity is None or dict(identity.claims) != bare(token):
        raise AssertionError("the two contenders disagree on the reference token")
    forged = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    if verifier.verify_token(forged, now=now) is not None:
        raise AssertionError("the preset accepted a forged token")
    return token, Call(verifier.verify_token, (token,), {"now": now}), Call(bare, (token,)), google


def _storm(now: float) -> dict[str, Any]:
    """Random kids within one cooldown: key-set fetches caused, and time per refusal."""
    google = FakeProvider.google()
    endpoints = FakeEndpoints()
    endpoints.serve_provider(google, cache_control="public, max-age=21600")
    verifier = oidc.google([CLIENT], source=FakeKeySetSource(endpoints))
    token = google.id_token(now, audience=CLIENT)
    verifier.verify_token(token, now=now)
    before = endpoints.hits(KEYS)
    _, body, signature = token.split(".")
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits
    storm = []
    for _ in range(STORM_TOKENS):
        kid = "".join(rng.choices(alphabet, k=27))
        header = _b64(json.dumps({"alg": "RS256", "kid": kid, "typ": "JWT"}).encode())
        storm.append(f"{header}.{body}.{signature}")
    cooldown = verifier.cache.refetch_cooldown
    start = now + cooldown  # the worst moment: the cooldown allows a refetch
    accepted = 0
    clock = time.perf_counter()
    for i, forged in enumerate(storm):
        if verifier.verify_token(forged, now=start + i * (cooldown - 1) / STORM_TOKENS) is not None:
            accepted += 1
    elapsed = time.perf_counter() - clock
    if accepted:
        raise AssertionError(f"{accepted} tokens with random kids were accepted")
    return {
        "tokens": STORM_TOKENS,
        "cooldown_s": cooldown,
        "fetches": endpoints.hits(KEYS) - before,
        "us_per_token": round(elapsed / STORM_TOKENS * 1e6, 3),
    }


class _Login:
    """One whole ID-token login per call, on a SQLite store; checks each is a Reissue."""

    def __init__(self, now: float, directory: str) -> None:
        google = FakeProvider.google()
        endpoints = FakeEndpoints()
        endpoints.serve_provider(google, cache_control="public, max-age=21600")
        users = FakeUserDirectory()
        users.add_user("alice", {"roles": ["editor"]})
        users.link("google", "g-1", "alice")
        self.store = SQLiteStore(os.path.join(directory, "sessions.sqlite3"))
        self.flow = Flow(
            KeyRing.generate(),
            self.store,
            users,
            external={"google": oidc.google([CLIENT], source=FakeKeySetSource(endpoints))},
        )
        token = google.id_token(now, audience=CLIENT, subject="g-1")
        self.request = Request("POST", credentials=ExternalTokenCredentials("google", token))
        self.now = now
        self.count = 0

    def __call__(self) -> None:
        decision = self.flow.decide(self.request, now=self.now)
        if type(decision) is not Reissue:
            raise AssertionError(f"login {self.count} gave {decision!r}")
        self.count += 1


def run(settings: Settings, report: Report) -> None:
    """Benchmark ID-token verification and login; print and fill in ``report``."""
    now = float(int(time.time()))
    _, preset, bare, _ = _contenders(now)
    with tempfile.TemporaryDirectory(prefix="tokenflow-bench-oidc-") as directory:
        login = _Login(now, directory)
        cases = [
            Case("preset/verify", preset),
            Case("joserfc/decode+validate", bare),
            Case("flow/id_token_login", Call(login)),
        ]

        def status(stats: dict[str, Stats] | Any) -> str:
            ratio = stats["preset/verify"].median / stats["joserfc/decode+validate"].median
            return f"preset vs joserfc so far: {ratio:.3f}x"

        stats = measure(GROUP, cases, settings, status=status)
        login.store.close()
    storm = _storm(now)

    ratio = stats["preset/verify"].median / stats["joserfc/decode+validate"].median
    rows = []
    for label in ("preset/verify", "joserfc/decode+validate", "flow/id_token_login"):
        s = stats[label]
        rows.append([label, f"{s.median:.2f}", f"{s.minimum:.2f}", f"{s.noise_pct:.1f}%"])
        report.add_row(GROUP, label, s.as_json())
    print(f"\nID tokens: median of {settings.rounds} interleaved rounds, µs per operation")
    if settings.quick:
        print("QUICK MODE: few rounds and short batches; do not quote these figures.")
    print(format_table(["case", "median µs", "min µs", "noise"], rows, "lrrr"))
    print(
        f"\nkid storm: {storm['tokens']} tokens with random kids within one "
        f"{storm['cooldown_s']:g} s cooldown caused {storm['fetches']} key-set fetch(es); "
        f"{storm['us_per_token']:.2f} µs per refused token"
    )
    login_us = stats["flow/id_token_login"].median
    print(f"whole ID-token login (verify + new session on SQLite): {login_us:.1f} µs")
    for name, value, goal, verdict in (
        ("oidc_verify_vs_jose", f"{ratio:.3f}", f"<= {VERIFY_GOAL}", ratio <= VERIFY_GOAL),
        (
            "oidc_kid_storm_fetches",
            str(storm["fetches"]),
            f"<= {STORM_GOAL}",
            storm["fetches"] <= STORM_GOAL,
        ),
    ):
        print(f"{name} = {value}  (goal {goal}: {'PASS' if verdict else 'MISS'})")

    report.add_libraries(*LIBRARIES)
    report.environment.setdefault("tokenflow_imported_from", os.path.dirname(tokenflow.__file__))
    report.add_detail(GROUP, "storm", storm)
    report.add_detail(
        GROUP, "goal", {"max_verify_ratio": VERIFY_GOAL, "max_storm_fetches": STORM_GOAL}
    )
    report.add_key("oidc_verify_vs_jose", round(ratio, 4))
    report.add_key("oidc_kid_storm_fetches", storm["fetches"])
    report.add_key("oidc_login_us", round(login_us, 2))
    # Sign in with a provider (the authorization-code flow): its own module.
    oidc_codeflow.run(settings, report)
