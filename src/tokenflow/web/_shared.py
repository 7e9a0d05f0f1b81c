"""What the ASGI and WSGI middleware share: everything but I/O.

:mod:`tokenflow.asgi` and :mod:`tokenflow.wsgi` differ only in how they
read a body, call the flow (await or not) and write a response. The rest is
here, sans-IO like the flow itself:

* :func:`for_route` turns the decision of an ordinary request into either a
  response the middleware sends itself (403, 429, and 401/503 on a route
  that requires a user) or a pass-through to the application with an
  :class:`Auth` and the cookies to append;
* :func:`endpoint` is a generator that serves the built-in endpoints
  (login, logout, sessions): it *yields* the operations it needs
  (:class:`Decide`, :class:`Login`, :class:`ReadBody`...) and receives their
  results, so that both middlewares run the very same endpoint code.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qsl, quote

from .._base64url import b64url_encode
from .._csrf import check_cross_origin
from .._errors import ConfigError
from .._http import safe_next
from .._model import (
    AuthorizationCodeCredentials,
    ButtonCredentials,
    Credentials,
    Decision,
    DeviceProofRequired,
    DeviceRegistered,
    ExternalTokenCredentials,
    Forbidden,
    LoggedOut,
    PasskeyCredentials,
    PasswordCredentials,
    Process,
    ProviderRedirect,
    Reissue,
    Request,
    Requirement,
    SecondFactorCredentials,
    SecondFactorRequired,
    StepUpRequired,
    TooManyRequests,
    Unauthorized,
    UnauthorizedReason,
    Unavailable,
)
from .._sessions import SessionInfo
from ..ports import SecondFactorFailure, SecondFactorRefused

__all__ = ["Auth", "Endpoints", "Required", "Requirements"]

DEFAULT_MAX_BODY: Final = 16 * 1024
"""Login bodies are a few hundred bytes; an ID token a few kilobytes."""
_FIELD_LIMIT: Final = 64
"""Form fields parsed from a login body at most (parse_qsl's own guard)."""

# -- what the application sees ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Auth:
    """Who a request is from, as the middleware found out.

    The middleware puts one in the ASGI scope (``scope["tokenflow"]``, and
    ``scope["state"]["tokenflow"]``, which is Starlette's and FastAPI's
    ``request.state.tokenflow``) and in the WSGI environ
    (``environ["tokenflow"]``). ``decision`` is the flow's decision for the
    request: Process or Reissue when a user is signed in; Unauthorized or
    Unavailable when the request passed through as anonymous.
    """

    decision: Decision

    @property
    def authenticated(self) -> bool:
        """True when a user is signed in (the decision is Process or Reissue)."""
        return isinstance(self.decision, (Process, Reissue))

    @property
    def user_id(self) -> str | None:
        """The signed-in user's id, or None for an anonymous request."""
        decision = self.decision
        if isinstance(decision, (Process, Reissue)):
            return decision.user_id
        return None

    @property
    def session_id(self) -> str | None:
        """The signed-in session's id, or None for an anonymous request."""
        decision = self.decision
        if isinstance(decision, (Process, Reissue)):
            return decision.session_id
        return None

    @property
    def claims(self) -> Mapping[str, Any]:
        """The access token's claims (empty for an anonymous request)."""
        decision = self.decision
        if isinstance(decision, (Process, Reissue)):
            return decision.claims
        return {}

    @property
    def denial_status(self) -> int:
        """What a route that requires a user answers to this anonymous request:
        503 when the session store was down (the user may well be signed in),
        else 401. 200 when a user is signed in."""
        if self.authenticated:
            return 200
        return 503 if isinstance(self.decision, Unavailable) else 401


Required: TypeAlias = "Callable[[str], bool] | Iterable[str] | None"
"""Which paths require a signed-in user: a predicate on the path, path
prefixes (``"/account"`` covers ``/account`` and ``/account/...``), or None
(no path: every route decides for itself through :class:`Auth`).

The path is the one the application routes: the ASGI path without
``root_path``, the WSGI ``PATH_INFO``. A path that is not in normal form
(repeated slashes, dot segments, percent-escapes, ``;`` parameters, a
backslash, capitals...) is also matched in every form a router might read it
in; if any of them is required, so is the path. A predicate is called with
each of those forms, and with each again in lower case."""

# -- the paths the middleware matches ------------------------------------------------

# A path in normal form: "/" and segments of lower-case unreserved or
# sub-delim characters, none empty and none starting with a dot (no "." or
# ".." segment, no "//"), an optional final "/". No "%", ";" or "\". Such
# a path reads the same to every router, so it is matched as it is; nearly
# every real path is one, and this test is all they cost.
_NORMAL: Final = re.compile(r"(?:/[a-z0-9\-_~!$&'()*+,=:@][a-z0-9\-_~!$&'()*+,=:@.]*)*/?")
_DECODE_ROUNDS: Final = 3
"""Percent-decoding passes: a proxy and a server may each decode once, a
router once more. A path still encoded deeper is treated as required."""
_PATH_LIMIT: Final = 2048
"""Longer paths not in normal form are not read (up to ~100 readings each,
about 0.5 ms at this length), only treated as required."""
_PARAMS: Final = re.compile(r";[^/]*")
_ESCAPE: Final = re.compile(r"%[0-9A-Fa-f]{2}")


def _remove_dots(path: str, merge: bool) -> str:
    """RFC 3986 dot-segment removal; ``merge`` also drops empty segments ("//")."""
    kept: list[str] = []
    segments = path.split("/")
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != "." and (segment or not merge):
            kept.append(segment)
    return "/" + "/".join(kept)


def path_readings(path: str) -> frozenset[str] | None:
    """Every form a router might read ``path`` in, or None when it is too
    long or too deeply encoded to tell (then it is treated as required).

    The forms combine: up to three rounds of percent-decoding; ``\\`` read as
    ``/``; ``;parameters`` stripped from each segment or kept; repeated
    slashes merged or kept; dot segments resolved or kept; a trailing slash
    dropped or kept. Each form starts with ``/``.
    """
    if len(path) > _PATH_LIMIT:
        return None
    decoded = [path]
    text = path
    for _ in range(_DECODE_ROUNDS):
        unescaped = _ESCAPE.sub(_unescape, text) if "%" in text else text
        if unescaped == text:
            break
        decoded.append(unescaped)
        text = unescaped
    else:
        if "%" in text and _ESCAPE.sub(_unescape, text) != text:
            return None
    readings: set[str] = set()
    for text in decoded:
        rooted = text if text.startswith("/") else "/" + text
        for slashed in {rooted, rooted.replace("\\", "/")}:
            for params in {slashed, _PARAMS.sub("", slashed)}:
                for form in (
                    params,
                    _remove_dots(params, merge=False),
                    _remove_dots(params, merge=True),
                ):
                    readings.add(form)
                    if len(form) > 1 and form.endswith("/"):
                        readings.add(form.rstrip("/") or "/")
    return frozenset(readings)


def _unescape(match: re.Match[str]) -> str:
    # Any byte, reserved or not: a router that decodes "%2F" reads "/". A
    # byte that is not ASCII stays encoded (it names no ASCII prefix).
    byte = int(match.group()[1:], 16)
    return chr(byte) if byte < 0x80 else match.group()


def required_predicate(
    required: object, endpoint_paths: Iterable[str] = ()
) -> Callable[[str], bool]:
    """Whether a path requires a signed-in user, for a middleware's ``required``
    argument (validated; :class:`ConfigError` otherwise).

    ``endpoint_paths`` are the built-in endpoints' paths: served at exactly
    that path, and required under any other spelling of it, so that no
    spelling of an endpoint's path passes through to the application
    anonymously.
    """
    base = _base_predicate(required)
    endpoints = frozenset(endpoint_paths)
    lowered = frozenset(path.lower() for path in endpoints)
    # With a trailing slash, an endpoint's path is still in normal form.
    slashed = frozenset(path.rstrip("/") + "/" for path in endpoints)

    def is_required(path: str) -> bool:
        if base(path) or path in slashed:
            return True
        if _NORMAL.fullmatch(path) and path != "":
            return False
        readings = path_readings(path)
        if readings is None:
            return True
        for reading in readings:
            lower = reading.lower()
            if base(reading) or base(lower) or lower in lowered:
                return True
        return False

    return is_required


def _base_predicate(required: object) -> Callable[[str], bool]:
    if required is None:
        return lambda path: False
    if callable(required):
        return required
    if isinstance(required, str) or not isinstance(required, Iterable):
        raise ConfigError(
            "required must be a predicate on the path, or a list of path prefixes such as "
            "['/account'], not a single string"
        )
    prefixes = tuple(required)
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ConfigError(f"required path prefixes start with '/': {prefix!r}")
    if not prefixes:
        return lambda path: False
    # "/account" covers "/account" and "/account/..." but not "/accounts".
    # Matched in lower case too: a case-insensitive router reads "/ACCOUNT"
    # as "/account" (the path's own lower-case forms are tried by the caller).
    bare: set[str] = set()
    slashed: set[str] = set()
    for prefix in prefixes:
        root = prefix.rstrip("/") or "/"
        bare.update((root, root.lower()))
        tree = prefix if prefix.endswith("/") else prefix + "/"
        slashed.update((tree, tree.lower()))
    bare_paths, trees = frozenset(bare), tuple(slashed)

    def matches(path: str) -> bool:
        return path in bare_paths or path.startswith(trees)

    return matches


Requirements: TypeAlias = "Mapping[str, Requirement] | None"
"""What routes require of the session's authentication (step-up): path prefixes
mapped to a :class:`~tokenflow.Requirement`, e.g. ``{"/admin/*":
Requirement(aal=2), "/settings": Requirement(max_age=300)}``. A prefix covers
itself and everything under it, like ``required`` (a trailing ``/*`` says so
explicitly and changes nothing); every spelling of a path a router would read
as the same is matched too. Where several match, all apply (the highest
``aal``, the shortest ``max_age``). A path with a requirement also requires a
signed-in user."""


def _strictest(found: Sequence[Requirement]) -> Requirement | None:
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    ages = [r.max_age for r in found if r.max_age is not None]
    return Requirement(max(r.aal for r in found), min(ages) if ages else None)


def requirement_lookup(requirements: object) -> Callable[[str], Requirement | None] | None:
    """The requirement of a path (None: none), for a middleware's ``requirements``
    argument (validated; :class:`ConfigError` otherwise); None when there are none."""
    if requirements is None:
        return None
    if not isinstance(requirements, Mapping):
        raise ConfigError(
            'requirements map path prefixes to Requirement values: {"/admin": Requirement(aal=2)}'
        )
    entries: list[tuple[Callable[[str], bool], Requirement]] = []
    for prefix, requirement in requirements.items():
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ConfigError(f"requirement path prefixes start with '/': {prefix!r}")
        if not isinstance(requirement, Requirement):
            raise ConfigError(f"requirements[{prefix!r}] must be a tokenflow.Requirement")
        root = prefix[:-2] if prefix.endswith("/*") else prefix
        if "*" in root:
            raise ConfigError(f"only a trailing '/*' is allowed in {prefix!r}")
        entries.append((_base_predicate([root or "/"]), requirement))
    if not entries:
        return None
    every = _strictest([r for _, r in entries])

    def lookup(path: str) -> Requirement | None:
        if _NORMAL.fullmatch(path) and path != "":
            forms: Iterable[str] = (path,)
        else:
            readings = path_readings(path)
            if readings is None:
                # Too long or too deeply encoded to read: every requirement applies.
                return every
            forms = readings | {reading.lower() for reading in readings}
        found = [r for matches, r in entries if any(matches(form) for form in forms)]
        return _strictest(found)

    return lookup


def is_navigation(method: str, sec_fetch_mode: str | None, accept: str) -> bool:
    """Whether a request is a browser navigation (a page load), which is sent to a
    page rather than answered with a 401: ``Sec-Fetch-Mode: navigate``, or, from
    a browser that does not send it, a GET asking for HTML."""
    if method not in ("GET", "HEAD"):
        return False
    if sec_fetch_mode is not None:
        return sec_fetch_mode == "navigate"
    return "text/html" in accept.lower()


def step_up_response(
    decision: StepUpRequired, navigation: bool, endpoints: Endpoints, target: str
) -> Response:
    """The answer to a request that falls short of its route's requirement.

    A browser navigation goes to ``endpoints.step_up_page`` (303, with
    ``next`` = ``target`` when it is a same-site path); anything else, or
    when no page is set, gets 401 with the RFC 9470 ``WWW-Authenticate``
    challenge. The decision's cookies (a rotation's) go out either way.
    """
    page = endpoints.step_up_page
    if navigation and page is not None:
        next_path = safe_next(target, "")
        location = page
        if next_path:
            location += ("&" if "?" in page else "?") + "next=" + quote(next_path, safe="/")
        return redirect(location, decision.set_cookies)
    requirement = decision.requirement
    body = {
        "error": "insufficient_user_authentication",
        "aal": requirement.aal,
        "max_age": requirement.max_age,
    }
    return json_response(
        401, body, decision.set_cookies, [("www-authenticate", decision.www_authenticate)]
    )


# -- configuration of the built-in endpoints ---------------------------------


def _check_path(name: str, value: object) -> None:
    if value is not None and (safe_next(value, "") != value):
        raise ConfigError(f"Endpoints.{name} must be a path starting with '/', or None")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the middleware serves its own endpoints, and how they answer.

    Set a path to None to turn that endpoint off. Every endpoint takes
    ``POST`` (the sessions list takes ``GET``), with a form
    (``application/x-www-form-urlencoded``) or a JSON body, and answers JSON
    to JSON requests (``Content-Type`` or ``Accept`` naming
    ``application/json``) and a ``303 See Other`` redirect to form posts.

    * ``login``: ``username`` and ``password``, or ``provider`` and
      ``id_token`` (an external identity token); optional ``next``, the
      same-site path to go to after a form login (default ``after_login``).
      A failed form login goes back to ``login_page`` with ``?error=...``
      when it is set, else answers 401.
    * ``logout``: revokes the session and clears the cookies; ``next`` as above
      (default ``after_logout``).
    * ``login`` also takes ``passkey``: the JSON of ``navigator.credentials.get()``
      (see ``passkeys`` below and docs/passkeys.md).
    * ``sessions``: ``GET`` lists the signed-in user's sessions;
      ``POST {sessions}/revoke`` with ``session_id`` revokes one of them
      (only the user's own); ``POST {sessions}/revoke-others`` signs out
      every other session and keeps the current one.
    * ``passkeys`` (served when the flow has ``passkeys=``): ``GET`` lists the
      signed-in user's passkeys; ``POST {passkeys}/register/options`` and
      ``POST {passkeys}/register`` (``response``, optional ``name``) add one
      to the signed-in user; ``POST {passkeys}/login/options`` starts a
      passkey login (then post ``passkey`` to ``login``);
      ``POST {passkeys}/rename`` (``credential_id``, ``name``) and
      ``POST {passkeys}/remove`` (``credential_id``; refused with 409 for
      the user's last way to sign in) manage them.

    * ``providers``: the prefix of the provider sign-in endpoints, for every
      provider of the flow whose client runs the authorization-code flow
      (:func:`tokenflow.oidc.code_flow`): ``GET {providers}/{name}/start?next=...``
      redirects to the provider, ``GET {providers}/{name}/callback`` is where
      it sends the browser back (register that exact URL at the provider),
      which then goes to ``next`` signed in, or to ``login_page?error=...``
      (else a 401) when the sign-in failed.

    * ``second_factor`` (served when the flow has ``second_factors=``): the
      second step of a login, ``code`` (a TOTP or recovery code) and optional
      ``next``, with the partial-login cookie the first step set. A login
      whose account has a second factor answers the first step with 401
      ``{"error": "second_factor_required", "methods": [...]}`` to JSON, or
      for a form, a redirect to ``second_factor_page?next=...`` when it is set.
    * ``step_up``: re-authenticate the signed-in session (see
      :meth:`tokenflow.Flow.step_up`) with ``code``, or ``username`` and
      ``password``, or ``passkey``; optional ``next``. A refused attempt
      goes back to ``step_up_page`` with ``?error=step_up_failed`` (form)
      or answers 401; no cookie is cleared.
    * ``step_up_page``: where a browser navigation that falls short of its
      route's requirement is sent (303, with ``next``); None answers it 401
      with the ``WWW-Authenticate`` challenge like any API request.
    * ``second_factor_setup`` (served when the flow's ``second_factors`` has
      the enrolment API of :class:`tokenflow.mfa.SecondFactors`): the
      signed-in user's own second factor, answered in JSON.
      ``GET {second_factor_setup}`` says which factors the account has and
      how many recovery codes are left; ``POST {...}/totp/begin`` starts a
      TOTP enrolment (the secret, the ``otpauth://`` URI and a QR code as
      SVG, shown this once); ``POST {...}/totp/confirm`` (``code``)
      confirms it with a first code, throttled like a login's second step,
      and answers the ten recovery codes (shown this once);
      ``POST {...}/recovery-codes`` replaces them with ten new ones;
      ``POST {...}/remove`` removes the factor (or a pending enrolment).
      Gates: an account that has a factor needs the session at assurance
      level 2 to begin, confirm, remove or regenerate (else 401
      ``insufficient_user_authentication``, the step-up challenge); one that
      has none needs an authentication within ``enrolment_max_age`` seconds
      (default 300) to begin, confirm or remove, so that a stolen session
      cookie alone cannot attach its thief's authenticator.

    ``max_body`` bounds the bytes read from a request body (413 beyond it).
    """

    login: str | None = "/auth/login"
    logout: str | None = "/auth/logout"
    sessions: str | None = "/auth/sessions"
    passkeys: str | None = "/auth/passkeys"
    after_login: str = "/"
    after_logout: str = "/"
    login_page: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    providers: str | None = "/auth/oidc"
    second_factor: str | None = "/auth/mfa/verify"
    step_up: str | None = "/auth/step-up"
    second_factor_page: str | None = None
    step_up_page: str | None = None
    second_factor_setup: str | None = "/auth/mfa"
    enrolment_max_age: int = 300
    _routes: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "login",
            "logout",
            "sessions",
            "passkeys",
            "after_login",
            "after_logout",
            "login_page",
            "providers",
            "second_factor",
            "step_up",
            "second_factor_page",
            "step_up_page",
            "second_factor_setup",
        ):
            _check_path(name, getattr(self, name))
        age = self.enrolment_max_age
        if isinstance(age, bool) or not isinstance(age, int) or not 30 <= age <= 3600:
            raise ConfigError("Endpoints.enrolment_max_age must be whole seconds, 30 to 3600")
        if isinstance(self.max_body, bool) or not isinstance(self.max_body, int):
            raise ConfigError("Endpoints.max_body must be a number of bytes")
        if not 256 <= self.max_body <= 1024 * 1024:
            raise ConfigError("Endpoints.max_body must be between 256 bytes and 1 MiB")
        routes: dict[str, str] = {}
        for kind, path in (("login", self.login), ("logout", self.logout)):
            if path is not None:
                routes[path] = kind
        if self.sessions is not None:
            base = self.sessions.rstrip("/")
            routes[base or "/"] = "sessions"
            routes[base + "/revoke"] = "revoke"
            routes[base + "/revoke-others"] = "revoke-others"
        if len(routes) != (self.login is not None) + (self.logout is not None) + 3 * (
            self.sessions is not None
        ):
            raise ConfigError("Endpoints: two endpoints share a path")
        object.__setattr__(self, "_routes", routes)

    def route(self, path: str) -> str | None:
        """The endpoint served at ``path``, or None for the application's own routes."""
        return self._routes.get(path) if self._routes else None


# -- responses the middleware writes itself --------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response: status, headers (str pairs) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PassThrough:
    """Serve the application; append ``set_cookies`` to whatever it answers."""

    auth: Auth
    set_cookies: tuple[str, ...]


_REASONS: Final = {
    200: "OK",
    204: "No Content",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def reason_phrase(status: int) -> str:
    """The reason phrase for a status the middleware answers (for WSGI)."""
    return _REASONS.get(status, "Unknown")


def _with_cookies(
    headers: list[tuple[str, str]], set_cookies: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    # Any response that sets or clears auth cookies must not be stored by a
    # shared cache, or another client could receive them.
    if set_cookies:
        headers.extend(("set-cookie", value) for value in set_cookies)
    headers.append(("cache-control", "no-store"))
    return tuple(headers)


def json_response(
    status: int, payload: object, set_cookies: Sequence[str] = (), extra: Sequence[Any] = ()
) -> Response:
    """A JSON response; every response of the middleware is ``no-store``."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body))), *extra]
    return Response(status, _with_cookies(headers, set_cookies), body)


def redirect(location: str, set_cookies: Sequence[str] = (), extra: Sequence[Any] = ()) -> Response:
    """A ``303 See Other`` to a same-site path (already checked by :func:`safe_next`)."""
    headers = [("location", location), ("content-length", "0"), *extra]
    return Response(303, _with_cookies(headers, set_cookies), b"")


def refusal(decision: Decision) -> Response:
    """The response to a decision that refuses the request (401, 403, 429, 503)."""
    if isinstance(decision, TooManyRequests):
        return json_response(
            429,
            {"error": "too_many_requests", "retry_after": decision.retry_after},
            extra=[("retry-after", str(decision.retry_after))],
        )
    if isinstance(decision, Forbidden):
        return json_response(403, {"error": "cross_origin_request_refused"})
    if isinstance(decision, Unavailable):
        return json_response(503, {"error": "unavailable"}, extra=[("retry-after", "5")])
    if isinstance(decision, StepUpRequired):
        return step_up_response(decision, False, Endpoints(), "")
    return json_response(401, {"error": "unauthorized"}, decision.set_cookies)


def server_error(set_cookies: Sequence[str]) -> Response:
    """The 500 the middleware answers when the application raised before its
    response started, on a request whose decision carries cookies.

    The cookies go out with it: after a refresh, the browser must learn the
    rotated token, or its next request would present the old one, be taken
    for a stolen copy once the grace window is over, and end the session.
    """
    return json_response(500, {"error": "internal_server_error"}, set_cookies)


def for_route(decision: Decision, required: bool) -> Response | PassThrough:
    """What to do with an ordinary request, given its decision.

    403 and 429 are answered whatever the route. A route that requires a
    user answers 401 (with the clearing cookies) or 503 itself; an optional
    route passes an anonymous request through, still clearing stale cookies
    after a 401, and changing nothing after a 503 (public pages stay up
    while the store is down).
    """
    if isinstance(decision, (Process, Reissue)):
        return PassThrough(Auth(decision), decision.set_cookies)
    if isinstance(decision, (Forbidden, TooManyRequests)) or required:
        return refusal(decision)
    return PassThrough(Auth(decision), decision.set_cookies)


# -- safe redirects ----------------------------------------------------------------

# A same-site path: "/" then no second "/" or "\" (which browsers read as a
# scheme-relative URL to another host), visible ASCII only (no control
# characters, which browsers strip before parsing).


# -- the built-in endpoints ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decide:
    """Operation: ``flow.decide(request)``."""

    request: Request


@dataclass(frozen=True, slots=True)
class Login:
    """Operation: ``flow.login(request)``."""

    request: Request


@dataclass(frozen=True, slots=True)
class StepUp:
    """Operation: ``flow.step_up(request)``."""

    request: Request


@dataclass(frozen=True, slots=True)
class Logout:
    """Operation: ``flow.logout(request)``."""

    request: Request


@dataclass(frozen=True, slots=True)
class SessionsOf:
    """Operation: ``flow.sessions_of(user_id)``; answered with a :class:`Failed` if it raises."""

    user_id: str


@dataclass(frozen=True, slots=True)
class Revoke:
    """Operation: ``flow.revoke_session(session_id)``; a :class:`Failed` if it raises."""

    session_id: str


@dataclass(frozen=True, slots=True)
class RegisterDevice:
    """Operation: ``flow.register_device(request)`` (device-bound sessions)."""

    request: Request


@dataclass(frozen=True, slots=True)
class RefreshDevice:
    """Operation: ``flow.refresh_device(request)`` (device-bound sessions)."""

    request: Request


@dataclass(frozen=True, slots=True)
class ReadBody:
    """Operation: read the request body, at most ``limit`` bytes; None if it is longer."""

    limit: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The answer to an operation that raised (a store failure)."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class PasskeyCall:
    """Operation: ``flow.passkeys.<method>(*args, **kwargs)``; a :class:`Failed` if it raises."""

    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StartProviderLogin:
    """Operation: ``flow.start_provider_login(request, provider, next_path=...)``."""

    request: Request
    provider: str
    next_path: str


@dataclass(frozen=True, slots=True)
class TransactionClearing:
    """Operation: ``flow.transaction_clearing(credentials)`` (no I/O)."""

    credentials: AuthorizationCodeCredentials


@dataclass(frozen=True, slots=True)
class Require:
    """Operation: ``flow.require(decision, requirement)`` (no I/O)."""

    decision: Process | Reissue
    requirement: Requirement


@dataclass(frozen=True, slots=True)
class FactorCall:
    """Operation: ``flow.second_factors.<method>(*args, **kwargs)``, with
    ``now=flow.clock()`` added when ``timed``; a :class:`Failed` if it raises."""

    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timed: bool = False


@dataclass(frozen=True, slots=True)
class ConfirmEnrolment:
    """Operation: ``flow.second_factor_attempt(user_id, <confirm_totp(user_id, code)>,
    client_address=...)``: the first code of an enrolment, throttled by the flow."""

    user_id: str
    code: str = field(repr=False)
    client_address: str | None


Operation: TypeAlias = (
    Require
    | FactorCall
    | ConfirmEnrolment
    | Decide
    | Login
    | StepUp
    | Logout
    | SessionsOf
    | Revoke
    | ReadBody
    | RegisterDevice
    | RefreshDevice
    | PasskeyCall
    | StartProviderLogin
    | TransactionClearing
)
Steps: TypeAlias = Generator[Operation, Any, Response]


@dataclass(frozen=True, slots=True)
class Incoming:
    """What an endpoint needs to know of the request, beyond its :class:`Request`."""

    method: str
    content_type: str
    accept: str
    query: str
    session_response: str | None = field(default=None, repr=False)
    """``Secure-Session-Response`` (a device-bound session proof), if sent."""
    session_id: str | None = None
    """``Sec-Secure-Session-Id``, if sent."""


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _wants_json(incoming: Incoming) -> bool:
    return _media_type(incoming.content_type) == "application/json" or (
        "application/json" in incoming.accept.lower()
    )


def _fields(incoming: Incoming, body: bytes) -> dict[str, str] | None:
    """The body's string fields, or None when it is neither a form nor a JSON object."""
    media = _media_type(incoming.content_type)
    if media == "application/json":
        try:
            data = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        return {k: v for k, v in data.items() if isinstance(v, str)}
    if media == "application/x-www-form-urlencoded" or (not media and not body):
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=_FIELD_LIMIT,
            )
        except (UnicodeDecodeError, ValueError):
            return None
        fields: dict[str, str] = {}
        for key, value in pairs:
            fields.setdefault(key, value)
        return fields
    return None


def _read_fields(
    incoming: Incoming, endpoints: Endpoints
) -> Generator[Operation, Any, dict[str, str] | Response]:
    body = yield ReadBody(endpoints.max_body)
    if body is None:
        return json_response(413, {"error": "body_too_large"})
    fields = _fields(incoming, body)
    if fields is None:
        return json_response(415, {"error": "expected_a_form_or_json_object"})
    return fields


def _credentials(fields: Mapping[str, str]) -> Credentials | None:
    username, password = fields.get("username"), fields.get("password")
    if username is not None and password is not None:
        return PasswordCredentials(username, password)
    provider, token = fields.get("provider"), fields.get("id_token")
    if provider is not None and token is not None:
        return ExternalTokenCredentials(provider, token)
    passkey = fields.get("passkey")
    if passkey is not None:
        return PasskeyCredentials(passkey)
    return None


def _with_error(page: str, error: str, next_path: str | None) -> str:
    query = f"error={error}"
    if next_path is not None:
        query += "&next=" + quote(next_path, safe="/")
    return page + ("&" if "?" in page else "?") + query


def endpoint(
    kind: str,
    request: Request,
    incoming: Incoming,
    endpoints: Endpoints,
    trusted_origins: frozenset[str] = frozenset(),
) -> Steps:
    """Serve one built-in endpoint (``kind`` from :meth:`Endpoints.route`).

    ``trusted_origins`` are the flow's (``FlowConfig.trusted_origins``).
    """
    method = incoming.method
    if kind.startswith(_PROVIDER_KINDS):
        return (yield from _provider(kind, request, incoming, endpoints))
    if kind in ("sessions", "pk-list", "enrol-status"):
        if method not in ("GET", "HEAD"):
            return json_response(405, {"error": "method_not_allowed"}, extra=[("allow", "GET")])
    elif method != "POST":
        return json_response(405, {"error": "method_not_allowed"}, extra=[("allow", "POST")])
    if kind in ("dbsc-register", "dbsc-refresh"):
        return (yield from _device(kind, request, incoming))
    as_json = _wants_json(incoming)
    if kind == "sessions":
        return (yield from _list_sessions(request))
    if kind == "pk-list":
        return (yield from _list_passkeys(request))
    if kind == "enrol-status":
        return (yield from _enrolment(kind, request, {}, endpoints))
    # The origin first: a cross-site post is refused whatever its body holds
    # (or lacks), and its body is never read. The flow still makes that
    # decision (with its event): a login without credentials is answered by
    # its cross-origin check alone, no port called.
    if not check_cross_origin(
        method, request.sec_fetch_site, request.origin, request.host, trusted_origins
    ).allowed:
        decision = yield Login(replace(request, credentials=None))
        if isinstance(decision, Forbidden):
            return refusal(decision)
    fields = yield from _read_fields(incoming, endpoints)
    if isinstance(fields, Response):
        return fields
    if kind == "login":
        return (yield from _login(request, fields, as_json, endpoints))
    if kind == "mfa-verify":
        return (yield from _second_factor(request, fields, as_json, endpoints))
    if kind == "step-up":
        return (yield from _step_up(request, fields, as_json, endpoints))
    if kind.startswith("pk-"):
        return (yield from _passkeys(kind, request, fields))
    if kind.startswith("enrol-"):
        return (yield from _enrolment(kind, request, fields, endpoints))
    if kind == "logout":
        decision = yield Logout(request)
        if not isinstance(decision, LoggedOut):
            return refusal(decision)
        if as_json:
            return json_response(200, {"logged_out": True}, decision.set_cookies)
        return redirect(safe_next(fields.get("next"), endpoints.after_logout), decision.set_cookies)
    return (yield from _revoke(kind, request, fields, as_json, endpoints))


def _login(
    request: Request, fields: Mapping[str, str], as_json: bool, endpoints: Endpoints
) -> Steps:
    credentials = _credentials(fields)
    raw_next = fields.get("next")
    next_path = safe_next(raw_next, endpoints.after_login)
    if credentials is None:
        decision: Decision = Unauthorized(UnauthorizedReason.NO_CREDENTIALS)
    else:
        decision = yield Login(replace(request, credentials=credentials))
    if isinstance(decision, Reissue):
        # With device-bound sessions on, the login answer invites the browser
        # to register (Secure-Session-Registration).
        if as_json:
            body = {"user_id": decision.user_id, "session_id": decision.session_id}
            return json_response(200, body, decision.set_cookies, decision.headers)
        return redirect(next_path, decision.set_cookies, decision.headers)
    if isinstance(decision, SecondFactorRequired):
        return _second_factor_required(decision, as_json, endpoints, next_path, ())
    if isinstance(decision, Unauthorized) and not as_json and endpoints.login_page is not None:
        kept = safe_next(raw_next, "") or None
        return redirect(_with_error(endpoints.login_page, "login_failed", kept))
    if isinstance(decision, Unauthorized):
        # A failed login leaves the current session alone: no cookie is cleared.
        return json_response(401, {"error": "login_failed"})
    return refusal(decision)


def _second_factor_required(
    decision: SecondFactorRequired,
    as_json: bool,
    endpoints: Endpoints,
    next_path: str,
    extra_cookies: Sequence[str],
) -> Response:
    """The first step of a two-step login: the partial-login cookie, and the
    way to the second step (a page for a form, 401 with the methods for JSON)."""
    cookies = decision.set_cookies + tuple(
        c for c in extra_cookies if c not in decision.set_cookies
    )
    page = endpoints.second_factor_page
    if not as_json and page is not None:
        location = page + ("&" if "?" in page else "?") + "next=" + quote(next_path, safe="/")
        return redirect(location, cookies)
    body = {"error": "second_factor_required", "methods": list(decision.methods)}
    return json_response(401, body, cookies)


def _second_factor(
    request: Request, fields: Mapping[str, str], as_json: bool, endpoints: Endpoints
) -> Steps:
    """The second step of a login: a code and the partial-login cookie."""
    code = fields.get("code")
    raw_next = fields.get("next")
    if code is None:
        decision: Decision = Unauthorized(UnauthorizedReason.NO_CREDENTIALS)
    else:
        decision = yield Login(replace(request, credentials=SecondFactorCredentials(code)))
    if isinstance(decision, Reissue):
        if as_json:
            body = {"user_id": decision.user_id, "session_id": decision.session_id, "aal": 2}
            return json_response(200, body, decision.set_cookies, decision.headers)
        next_path = safe_next(raw_next, endpoints.after_login)
        return redirect(next_path, decision.set_cookies, decision.headers)
    if isinstance(decision, Unauthorized):
        page = endpoints.second_factor_page
        if not as_json and page is not None:
            kept = safe_next(raw_next, "") or None
            return redirect(_with_error(page, "second_factor_failed", kept))
        # The partial login stays: a mistyped code can be typed again.
        return json_response(401, {"error": "second_factor_failed"})
    return refusal(decision)


def _step_up_credentials(fields: Mapping[str, str]) -> Credentials | None:
    code = fields.get("code")
    if code is not None:
        return SecondFactorCredentials(code)
    username, password = fields.get("username"), fields.get("password")
    if username is not None and password is not None:
        return PasswordCredentials(username, password)
    passkey = fields.get("passkey")
    if passkey is not None:
        return PasskeyCredentials(passkey)
    return None


def _step_up(
    request: Request, fields: Mapping[str, str], as_json: bool, endpoints: Endpoints
) -> Steps:
    """Re-authenticate the signed-in session: the same session, raised assurance."""
    credentials = _step_up_credentials(fields)
    raw_next = fields.get("next")
    if credentials is None:
        decision: Decision = Unauthorized(UnauthorizedReason.NO_CREDENTIALS)
    else:
        decision = yield StepUp(replace(request, credentials=credentials))
    if isinstance(decision, Reissue):
        # A device-bound session's answer carries the challenge for the
        # refresh token it hands out (no-store is added to every response).
        extra = [h for h in decision.headers if h[0].lower() != "cache-control"]
        if as_json:
            body = {
                "session_id": decision.session_id,
                "aal": decision.aal,
                "auth_time": decision.auth_time,
            }
            return json_response(200, body, decision.set_cookies, extra)
        return redirect(safe_next(raw_next, endpoints.after_login), decision.set_cookies, extra)
    if isinstance(decision, Unauthorized):
        page = endpoints.step_up_page
        if not as_json and page is not None:
            kept = safe_next(raw_next, "") or None
            return redirect(_with_error(page, "step_up_failed", kept))
        # A refused step-up leaves the session alone: no cookie is cleared.
        return json_response(401, {"error": "step_up_failed"})
    return refusal(decision)


def _signed_in(request: Request) -> Generator[Operation, Any, Process | Reissue | Response]:
    decision = yield Decide(request)
    if isinstance(decision, (Process, Reissue)):
        return decision
    return refusal(decision)


def _session_json(info: SessionInfo, current: str) -> dict[str, object]:
    return {
        "session_id": info.session_id,
        "current": info.session_id == current,
        "created_at": info.created_at,
        "refreshed_at": info.refreshed_at,
        "idle_expires_at": info.idle_expires_at,
        "absolute_expires_at": info.absolute_expires_at,
        "metadata": dict(info.metadata),
        "device_bound": info.device_key is not None,
    }


def _list_sessions(request: Request) -> Steps:
    who = yield from _signed_in(request)
    if isinstance(who, Response):
        return who
    sessions = yield SessionsOf(who.user_id)
    if isinstance(sessions, Failed):
        return json_response(503, {"error": "unavailable"}, who.set_cookies)
    listed = [_session_json(info, who.session_id) for info in sessions]
    return json_response(200, {"sessions": listed}, who.set_cookies)


def _revoke(
    kind: str, request: Request, fields: Mapping[str, str], as_json: bool, endpoints: Endpoints
) -> Steps:
    who = yield from _signed_in(request)
    if isinstance(who, Response):
        return who
    cookies = who.set_cookies
    sessions = yield SessionsOf(who.user_id)
    if isinstance(sessions, Failed):
        return json_response(503, {"error": "unavailable"}, cookies)
    owned = [info.session_id for info in sessions]
    if kind == "revoke":
        target = fields.get("session_id")
        # Only the user's own sessions: any other id (another user's, or
        # none at all) gets the same 404, which tells nothing about it.
        if target is None or target not in owned:
            return json_response(404, {"error": "no_such_session"}, cookies)
        if target == who.session_id:
            decision = yield Logout(request)
            if not isinstance(decision, LoggedOut):
                return refusal(decision)
            if as_json:
                return json_response(200, {"revoked": 1, "logged_out": True}, decision.set_cookies)
            return redirect(
                safe_next(fields.get("next"), endpoints.after_logout), decision.set_cookies
            )
        targets = [target]
    else:
        targets = [sid for sid in owned if sid != who.session_id]
    revoked = 0
    for session_id in targets:
        outcome = yield Revoke(session_id)
        if isinstance(outcome, Failed):
            return json_response(503, {"error": "unavailable", "revoked": revoked}, cookies)
        revoked += bool(outcome)
    if as_json:
        return json_response(200, {"revoked": revoked}, cookies)
    return redirect(safe_next(fields.get("next"), endpoints.after_login), cookies)


# -- device-bound sessions (DBSC) ----------------------------------------------------


def routes_with_device_binding(endpoints: Endpoints, binding: Any) -> Mapping[str, str]:
    """The endpoint routes, plus the DBSC registration and refresh paths when
    ``binding`` (the flow's ``FlowConfig.device_binding``) is set."""
    routes = dict(endpoints._routes)
    if binding is None:
        return routes
    for path, kind in (
        (binding.registration_path, "dbsc-register"),
        (binding.refresh_path, "dbsc-refresh"),
    ):
        if path in routes:
            raise ConfigError(f"the device-binding path {path!r} is also an endpoint's path")
        routes[path] = kind
    return routes


def _device(kind: str, request: Request, incoming: Incoming) -> Steps:
    """The DBSC registration or refresh endpoint: POST, no body, headers only."""
    if incoming.method != "POST":
        return json_response(405, {"error": "method_not_allowed"}, extra=[("allow", "POST")])
    request = replace(
        request, session_response=incoming.session_response, session_id_header=incoming.session_id
    )
    operation: Operation = (
        RegisterDevice(request) if kind == "dbsc-register" else RefreshDevice(request)
    )
    decision = yield operation
    return device_response(decision)


def device_response(decision: Decision) -> Response:
    """The HTTP answer to a DBSC registration or refresh decision.

    Registration: 200 with the JSON session instructions, the bound cookie and
    the next challenge. Refresh: 200 with an empty body, the new cookies and
    the next challenge. A proof is asked for with 403 and a challenge (a
    browser ends its device-bound session on a 401, which is what every other
    refusal answers: the session is over, or the proof was not the device's).
    """
    if isinstance(decision, DeviceRegistered):
        body = decision.body
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *(h for h in decision.headers if h[0].lower() != "cache-control"),
        ]
        return Response(200, _with_cookies(headers, decision.set_cookies), body)
    if isinstance(decision, Reissue):
        headers = [
            ("content-length", "0"),
            *(h for h in decision.headers if h[0].lower() != "cache-control"),
        ]
        return Response(200, _with_cookies(headers, decision.set_cookies), b"")
    if isinstance(decision, DeviceProofRequired):
        return json_response(403, {"error": "proof_required"}, extra=decision.headers)
    return refusal(decision)


# -- passkeys (issue 21) ----------------------------------------------------------------

_PASSKEY_ROUTES: Final = (
    ("", "pk-list"),
    ("/register/options", "pk-register-options"),
    ("/register", "pk-register"),
    ("/login/options", "pk-login-options"),
    ("/rename", "pk-rename"),
    ("/remove", "pk-remove"),
)


def routes_with_passkeys(
    routes: Mapping[str, str], endpoints: Endpoints, passkeys: object
) -> Mapping[str, str]:
    """``routes``, plus the passkey endpoints when the flow has ``passkeys`` (not None)."""
    if passkeys is None or endpoints.passkeys is None:
        return routes
    added = dict(routes)
    base = endpoints.passkeys.rstrip("/")
    for suffix, kind in _PASSKEY_ROUTES:
        path = (base + suffix) or "/"
        if path in added:
            raise ConfigError(f"the passkey endpoint {path!r} is also another endpoint's path")
        added[path] = kind
    return added


def _passkey_json(passkey: Any) -> dict[str, object]:
    return {
        "credential_id": b64url_encode(passkey.credential_id),
        "name": passkey.name,
        "created_at": passkey.created_at,
        "last_used_at": passkey.last_used_at,
        "backup_eligible": passkey.backup_eligible,
        "backed_up": passkey.backed_up,
        "user_verified": passkey.user_verified,
        "transports": list(passkey.transports),
    }


def _list_passkeys(request: Request) -> Steps:
    who = yield from _signed_in(request)
    if isinstance(who, Response):
        return who
    owned = yield PasskeyCall("passkeys_of", (who.user_id,))
    if isinstance(owned, Failed):
        return json_response(503, {"error": "unavailable"}, who.set_cookies)
    return json_response(200, {"passkeys": [_passkey_json(p) for p in owned]}, who.set_cookies)


def _passkeys(kind: str, request: Request, fields: Mapping[str, str]) -> Steps:
    """The passkey endpoints: every one but the login options needs a signed-in user."""
    if kind == "pk-login-options":
        origin = yield PasskeyCall("origin_for", (request.origin,))
        if origin is None or isinstance(origin, Failed):
            return json_response(400, {"error": "origin_not_allowed"})
        options = yield PasskeyCall("authentication_options", (), {"origin": origin})
        if isinstance(options, Failed):
            return json_response(503, {"error": "unavailable"})
        return json_response(200, json.loads(options))
    who = yield from _signed_in(request)
    if isinstance(who, Response):
        return who
    cookies = who.set_cookies
    user_id = who.user_id
    if kind == "pk-register-options":
        origin = yield PasskeyCall("origin_for", (request.origin,))
        if origin is None or isinstance(origin, Failed):
            return json_response(400, {"error": "origin_not_allowed"}, cookies)
        name = str(who.claims.get("name") or user_id)
        options = yield PasskeyCall(
            "registration_options",
            (user_id, who.session_id),
            {"user_name": name, "origin": origin},
        )
        if isinstance(options, Failed):
            return json_response(503, {"error": "unavailable"}, cookies)
        return json_response(200, json.loads(options), cookies)
    if kind == "pk-register":
        response = fields.get("response")
        if response is None:
            return json_response(400, {"error": "missing_response"}, cookies)
        outcome = yield PasskeyCall(
            "verify_registration",
            (user_id, who.session_id, response),
            {"name": fields.get("name", "")},
        )
        if isinstance(outcome, Failed):
            return json_response(503, {"error": "unavailable"}, cookies)
        if isinstance(outcome, enum.Enum):
            return json_response(400, {"error": "registration_refused"}, cookies)
        return json_response(201, {"passkey": _passkey_json(outcome)}, cookies)
    credential_id = fields.get("credential_id")
    if credential_id is None:
        return json_response(400, {"error": "missing_credential_id"}, cookies)
    if kind == "pk-rename":
        renamed = yield PasskeyCall("rename", (user_id, credential_id, fields.get("name", "")))
        if isinstance(renamed, Failed):
            return json_response(503, {"error": "unavailable"}, cookies)
        if not renamed:
            return json_response(404, {"error": "no_such_passkey"}, cookies)
        return json_response(200, {"renamed": True}, cookies)
    removed = yield PasskeyCall("remove", (user_id, credential_id))
    if isinstance(removed, Failed):
        return json_response(503, {"error": "unavailable"}, cookies)
    if removed.value == "last_sign_in":
        return json_response(409, {"error": "last_way_to_sign_in"}, cookies)
    if removed.value != "removed":
        return json_response(404, {"error": "no_such_passkey"}, cookies)
    return json_response(200, {"removed": True}, cookies)


# -- end passkeys ------------------------------------------------------------------------


# -- sign in with a provider (OpenID Connect authorization code, issue 20) -----------

_PROVIDER_KINDS: Final = (
    "oidc-start:",
    "oidc-callback:",
    "oidc-callback-post:",
    "oidc-button:",
)
_CALLBACK_PARAMETERS: Final = ("code", "state", "iss", "error")


def routes_with_providers(
    routes: Mapping[str, str],
    endpoints: Endpoints,
    providers: Iterable[str],
    form_post: Iterable[str] = (),
    buttons: Iterable[str] = (),
) -> Mapping[str, str]:
    """``routes`` plus the start and callback paths of every code-flow provider
    (``providers``: the flow's :attr:`~tokenflow.Flow.code_providers`; the
    callbacks of ``form_post`` ones take POST, the others GET), and the
    sign-in button endpoint of each of ``buttons`` (``POST {providers}/{name}/button``)."""
    posting = frozenset(form_post)
    merged = dict(routes)
    if endpoints.providers is None:
        return merged
    base = endpoints.providers.rstrip("/")
    for name in sorted(providers):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ConfigError(
                f"provider name {name!r} cannot be a path segment: use letters, digits, '_.-'"
            )
        for action in ("start", "callback"):
            path = f"{base}/{name}/{action}"
            if path in merged:
                raise ConfigError(f"the sign-in path {path!r} is also an endpoint's path")
            if action == "callback" and name in posting:
                action = "callback-post"
            merged[path] = f"oidc-{action}:{name}"
    for name in sorted(buttons):
        path = f"{base}/{name}/button"
        if path in merged:
            raise ConfigError(f"the sign-in path {path!r} is also an endpoint's path")
        merged[path] = f"oidc-button:{name}"
    return merged


def _callback_parameters(query: str) -> dict[str, str | None] | None:
    """The callback's ``code``, ``state``, ``iss`` and ``error`` (from the query, or
    a form_post body); None when they cannot be parsed. A parameter sent twice
    (RFC 6749 3.1 forbids it) reads as absent, and then no state names a
    transaction: the sign-in fails."""
    try:
        pairs = parse_qsl(
            query, keep_blank_values=True, strict_parsing=False, max_num_fields=_FIELD_LIMIT
        )
    except ValueError:
        return None
    seen: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in _CALLBACK_PARAMETERS:
            seen.setdefault(key, []).append(value)
    parameters: dict[str, str | None] = {}
    for key in _CALLBACK_PARAMETERS:
        values = seen.get(key, [])
        parameters[key] = values[0] if len(values) == 1 else None
    if any(len(values) > 1 for values in seen.values()):
        parameters["state"] = None
    return parameters


def _provider(kind: str, request: Request, incoming: Incoming, endpoints: Endpoints) -> Steps:
    """``GET {providers}/{name}/start`` and ``GET`` (or, for a form_post
    provider, ``POST``) ``{providers}/{name}/callback``."""
    action, _, provider = kind.partition(":")
    allowed = "POST" if action in ("oidc-callback-post", "oidc-button") else "GET"
    if incoming.method != allowed:
        return json_response(405, {"error": "method_not_allowed"}, extra=[("allow", allowed)])
    if action == "oidc-start":
        try:
            query = dict(parse_qsl(incoming.query, max_num_fields=_FIELD_LIMIT))
        except ValueError:
            query = {}
        next_path = safe_next(query.get("next"), endpoints.after_login)
        decision = yield StartProviderLogin(request, provider, next_path)
        if isinstance(decision, ProviderRedirect):
            headers = [("location", decision.location), ("content-length", "0")]
            return Response(302, _with_cookies(headers, decision.set_cookies), b"")
        return _sign_in_failed(decision, endpoints, ())
    if action == "oidc-button":
        return (yield from _button(provider, request, incoming, endpoints))
    if allowed == "POST":
        # The flow admits this cross-site POST only for this provider, with the
        # state as its defence; the body is bounded like every endpoint's.
        body = yield ReadBody(endpoints.max_body)
        if body is None:
            return json_response(413, {"error": "body_too_large"})
        if _media_type(incoming.content_type) != "application/x-www-form-urlencoded":
            return json_response(415, {"error": "expected_a_form"})
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        parameters = _callback_parameters(text) or {}
    else:
        parameters = _callback_parameters(incoming.query) or {}
    credentials = AuthorizationCodeCredentials(
        provider,
        parameters.get("code"),
        parameters.get("state"),
        parameters.get("iss"),
        parameters.get("error"),
    )
    decision = yield Login(replace(request, credentials=credentials))
    # The transaction cookie goes whatever the outcome; Reissue and
    # Unauthorized carry it already, the other refusals cannot.
    clearing: tuple[str, ...] = yield TransactionClearing(credentials)
    if isinstance(decision, Reissue):
        location = endpoints.after_login
        others = []
        for name, value in decision.headers:
            if name == "Location":
                location = safe_next(value, endpoints.after_login)
            else:
                others.append((name, value))
        return redirect(location, decision.set_cookies, others)
    if isinstance(decision, SecondFactorRequired):
        next_path = safe_next(decision.next_path, endpoints.after_login)
        return _second_factor_required(decision, False, endpoints, next_path, clearing)
    cookies = decision.set_cookies + tuple(c for c in clearing if c not in decision.set_cookies)
    return _sign_in_failed(decision, endpoints, cookies)


def _button(provider: str, request: Request, incoming: Incoming, endpoints: Endpoints) -> Steps:
    """Google Identity Services' redirect mode: a cross-site form POST of
    ``credential`` (an ID token) and ``g_csrf_token`` (also in a cookie). The
    flow admits it only when the two tokens match, and verifies the ID token
    like any other of that provider."""
    fields = yield from _read_fields(incoming, endpoints)
    if isinstance(fields, Response):
        return fields
    token = fields.get("credential")
    if token is None:
        decision: Decision = Unauthorized(UnauthorizedReason.NO_CREDENTIALS)
    else:
        credentials = ButtonCredentials(provider, token, fields.get("g_csrf_token"))
        decision = yield Login(replace(request, credentials=credentials))
    if isinstance(decision, Reissue):
        return redirect(endpoints.after_login, decision.set_cookies, decision.headers)
    if isinstance(decision, SecondFactorRequired):
        return _second_factor_required(decision, False, endpoints, endpoints.after_login, ())
    return _sign_in_failed(decision, endpoints, ())


def _sign_in_failed(decision: Decision, endpoints: Endpoints, cookies: Sequence[str]) -> Response:
    """A provider sign-in that did not sign anyone in: back to the login page with
    ``?error=`` (``login_failed``, ``too_many_requests``, ``unavailable``), or
    the refusal's JSON when there is no login page."""
    if endpoints.login_page is not None:
        error = (
            "too_many_requests"
            if isinstance(decision, TooManyRequests)
            else "unavailable"
            if isinstance(decision, Unavailable)
            else "login_failed"
        )
        return redirect(_with_error(endpoints.login_page, error, None), cookies)
    response = refusal(decision)
    if isinstance(decision, Unauthorized):
        response = json_response(401, {"error": "login_failed"})
    headers = [h for h in response.headers if h[0] not in ("set-cookie", "cache-control")]
    return Response(response.status, _with_cookies(headers, cookies), response.body)


def routes_of(endpoints: Endpoints, flow: Any) -> Mapping[str, str]:
    """Every built-in endpoint of a flow: path -> kind (what both middlewares route).

    The configured endpoints, the device-bound ones when the flow binds devices,
    the start and callback of each code-flow provider (and Google Identity
    Services' button endpoint), the passkey endpoints when it has passkeys, and
    the second-factor and step-up endpoints when it has second factors.
    """
    routes = routes_with_passkeys(
        routes_with_providers(
            routes_with_device_binding(endpoints, flow.config.device_binding),
            endpoints,
            flow.code_providers,
            flow.form_post_providers,
            # Google Identity Services' button posts to its own endpoint.
            flow.providers & {"google"},
        ),
        endpoints,
        flow.passkeys,
    )
    if flow.second_factors is None:
        return routes
    routes = dict(routes)
    paths = [(endpoints.second_factor, "mfa-verify"), (endpoints.step_up, "step-up")]
    base = endpoints.second_factor_setup
    if base is not None and all(
        callable(getattr(flow.second_factors, name, None)) for name in ENROLMENT_API
    ):
        base = base.rstrip("/")
        paths.extend(((base + suffix) or "/", kind) for suffix, kind in _ENROLMENT_ROUTES)
    for path, kind in paths:
        if path is None:
            continue
        if path in routes:
            raise ConfigError(f"the endpoint path {path!r} is used twice")
        routes[path] = kind
    return routes


# -- enrolling a second factor (issue 22) ------------------------------------------

ENROLMENT_API: Final = (
    "factors_of",
    "begin_totp",
    "confirm_totp",
    "regenerate_recovery_codes",
    "recovery_codes_left",
    "remove",
)
"""What the enrolment endpoints call on the flow's ``second_factors`` (the
enrolment API of :class:`tokenflow.mfa.SecondFactors`): served only when it has all."""

_ENROLMENT_ROUTES: Final = (
    ("", "enrol-status"),
    ("/totp/begin", "enrol-begin"),
    ("/totp/confirm", "enrol-confirm"),
    ("/recovery-codes", "enrol-recovery-codes"),
    ("/remove", "enrol-remove"),
)
_LABEL_LIMIT: Final = 200


def _account_name(who: Process | Reissue) -> str:
    """What the authenticator app shows under the issuer: the account's email or
    name claim, else its user id (without ':', which ends the label's issuer part)."""
    for value in (who.claims.get("email"), who.claims.get("name"), who.user_id):
        if isinstance(value, str):
            label = " ".join(value.replace(":", " ").split())[:_LABEL_LIMIT]
            if label:
                return label
    return "account"


def _with_cookies_of(response: Response, cookies: Sequence[str]) -> Response:
    """``response`` with a signed-in decision's cookies (a rotation's: never dropped)."""
    if not cookies:
        return response
    headers = [h for h in response.headers if h[0] != "cache-control"]
    return Response(response.status, _with_cookies(headers, cookies), response.body)


def _codes_json(codes: Any) -> list[str]:
    return [str(code) for code in codes]


def _enrolment(
    kind: str, request: Request, fields: Mapping[str, str], endpoints: Endpoints
) -> Steps:
    """The signed-in user's second factor: status, TOTP enrolment, recovery codes, removal.

    Who the user is comes from the flow; what the session must show for each
    action (assurance level 2 when the account has a factor, a recent
    authentication when it has none) is checked by the flow's ``require``,
    which answers the same StepUpRequired a route requirement would.
    """
    who = yield from _signed_in(request)
    if isinstance(who, Response):
        return who
    user_id, cookies = who.user_id, who.set_cookies
    factors = yield FactorCall("factors_of", (user_id,))
    if isinstance(factors, Failed):
        return json_response(503, {"error": "unavailable"}, cookies)
    enrolled = bool(factors)
    if kind == "enrol-status":
        left = (yield FactorCall("recovery_codes_left", (user_id,))) if enrolled else 0
        if isinstance(left, Failed):
            return json_response(503, {"error": "unavailable"}, cookies)
        body = {"factors": list(factors), "recovery_codes_left": left}
        return json_response(200, body, cookies)
    if kind == "enrol-recovery-codes" and not enrolled:
        return json_response(404, {"error": "not_enrolled"}, cookies)
    # Replacing or removing a factor, or new recovery codes, takes the factor
    # itself (aal 2); a first one takes a recent login, so that a session
    # cookie stolen earlier cannot attach its thief's authenticator.
    requirement = (
        Requirement(aal=2) if enrolled else Requirement(max_age=endpoints.enrolment_max_age)
    )
    gated = yield Require(who, requirement)
    if isinstance(gated, StepUpRequired):
        return step_up_response(gated, False, endpoints, "")
    if kind == "enrol-begin":
        enrolment = yield FactorCall(
            "begin_totp", (user_id,), {"account_name": _account_name(who)}, timed=True
        )
        if isinstance(enrolment, Failed):
            return json_response(503, {"error": "unavailable"}, cookies)
        body = {
            "secret": enrolment.secret,
            "uri": enrolment.uri,
            "qr_svg": enrolment.qr_svg,
            "expires_at": enrolment.expires_at,
        }
        return json_response(200, body, cookies)
    if kind == "enrol-confirm":
        code = fields.get("code")
        if code is None:
            return json_response(400, {"error": "missing_code"}, cookies)
        outcome = yield ConfirmEnrolment(user_id, code, request.client_address)
        if isinstance(outcome, (TooManyRequests, Unavailable)):
            return _with_cookies_of(refusal(outcome), cookies)
        if isinstance(outcome, SecondFactorRefused):
            if outcome.reason is SecondFactorFailure.NOT_ENROLLED:
                return json_response(409, {"error": "no_enrolment_pending"}, cookies)
            if outcome.reason is SecondFactorFailure.REPLAYED:
                return json_response(409, {"error": "enrolment_already_confirmed"}, cookies)
            return json_response(400, {"error": "wrong_code"}, cookies)
        if isinstance(outcome, Failed):
            return json_response(503, {"error": "unavailable"}, cookies)
        body = {"factors": ["totp"], "recovery_codes": _codes_json(outcome)}
        return json_response(200, body, cookies)
    if kind == "enrol-recovery-codes":
        codes = yield FactorCall("regenerate_recovery_codes", (user_id,))
        if isinstance(codes, Failed):
            return json_response(503, {"error": "unavailable"}, cookies)
        if isinstance(codes, SecondFactorRefused):
            return json_response(404, {"error": "not_enrolled"}, cookies)
        return json_response(200, {"recovery_codes": _codes_json(codes)}, cookies)
    removed = yield FactorCall("remove", (user_id,))
    if isinstance(removed, Failed):
        return json_response(503, {"error": "unavailable"}, cookies)
    return json_response(200, {"removed": bool(removed)}, cookies)


# -- end enrolment ---------------------------------------------------------------------
