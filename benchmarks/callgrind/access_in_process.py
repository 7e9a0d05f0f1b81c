"""N valid-access requests through TokenflowMiddleware on a bare ASGI app, in process.

Usage: python access_in_process.py N (under callgrind, twice: see README.md)
"""

import gc
import sys

from tokenflow import Flow, KeyRing, PasswordCredentials, Process, Reissue, Request
from tokenflow.asgi import TokenflowMiddleware, auth_of
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory

HOST = "app.example"
PASSWORD = "a long benchmark passphrase"

users = FakeUserDirectory()
users.add_user("user-0")
passwords = FakePasswordVerifier()
passwords.set_password("user-0", PASSWORD, user_id="user-0")
flow = Flow(KeyRing.generate(), MemoryStore(), users, passwords=passwords)
decision = flow.login(Request(method="POST", credentials=PasswordCredentials("user-0", PASSWORD)))
assert isinstance(decision, Reissue), decision
access, refresh = (c.split(";", 1)[0] for c in decision.set_cookies)
others = (
    "_ga=GA1.1.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; "
    "csrftoken=q3Vx8kJb2NfZ0aLw9RtY7cUe1HmGs4Pd; locale=en-GB"
)
header = f"{others}; _pad={'x' * 200}; {access}; {refresh}"

seen = [0]
last = [None]


async def app(scope, receive, send):
    last[0] = auth_of(scope).decision
    seen[0] += 1


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message):
    return None


middleware = TokenflowMiddleware(app, flow, required=["/account"])


def scope():
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/account",
        "raw_path": b"/account",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", HOST.encode()),
            (
                b"user-agent",
                b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            (b"sec-fetch-site", b"same-origin"),
            (b"cookie", header.encode()),
        ],
        "client": ("192.0.2.10", 51000),
        "server": (HOST, 443),
        "state": {},
    }


def drive():
    coroutine = middleware(scope(), receive, send)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("suspended on the access path")


drive()
assert type(last[0]) is Process, last[0]
gc.collect()
gc.freeze()
for _ in range(int(sys.argv[1])):
    drive()
assert type(last[0]) is Process, last[0]
print(seen[0], "requests, Process")
