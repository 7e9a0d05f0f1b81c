"""URL routes of the Django example."""

from __future__ import annotations

from django.urls import path

from . import auth, views

urlpatterns = [
    path("", views.home),
    path("me", views.me),
    path("notes", views.notes),
    path("login", auth.login_form),
    path("auth/login", auth.login),
    path("auth/logout", auth.logout),
    path("auth/oidc/provider/start", auth.provider_start),
    path("auth/oidc/provider/callback", auth.provider_callback),
]
