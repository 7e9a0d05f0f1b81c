"""The least Django needs to serve the tokenflow example (no database, no sessions app)."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
MIDDLEWARE = ["examples.django_app.auth.TokenflowMiddleware"]
USE_TZ = True
# The flow's keys, lifetimes, store and cookie policy come from the environment:
# see examples/environment.py.
