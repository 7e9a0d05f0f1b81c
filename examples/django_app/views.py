"""The example's pages: one public, two for signed-in users."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from .auth import login_required, user_of


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"hello, {user_of(request) or 'stranger'}")


@login_required
def me(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"user": user_of(request)})


@require_POST
@login_required
def notes(request: HttpRequest) -> HttpResponse:
    # Cross-site form posts never get here: the middleware answers 403.
    return JsonResponse({"saved_for": user_of(request)})
