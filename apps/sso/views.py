"""Admin sign-in through the identity provider: the redirect out, the callback back, and logout.

Thin: the client (Authlib) checks state, PKCE, the ID token's signature, ``iss``, ``aud``, ``exp`` and
``nonce``; ``sso_sign_in`` decides who gets in and with which memberships. Every refusal is a page with
a 4xx status naming the reason, logged without tokens; never a 500.
"""

from __future__ import annotations

import logging

import requests
from authlib.common.errors import AuthlibBaseError
from django.conf import settings
from django.contrib.auth import login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from joserfc.errors import JoseError

from apps.sso.claims import claims_read
from apps.sso.client import SsoUnavailable, id_token_claims_options, oidc_client, provider_metadata, sso_enabled
from apps.sso.services import SsoRefused, sso_sign_in
from apps.teams.client_ip import client_ip

log = logging.getLogger("gateway.sso")

NEXT_KEY = "sso_next"
ID_TOKEN_KEY = "sso_id_token"
# The backend recorded in the session: it restores the user on later requests (a ModelBackend subclass).
SESSION_BACKEND = "apps.sso.backends.PasswordLoginBackend"
# What the token exchange and ID token checks may raise: a refusal, not a server error.
TOKEN_ERRORS = (AuthlibBaseError, JoseError, requests.RequestException, ValueError, KeyError, TypeError)


def _refused(request: HttpRequest, reason: str, status: int) -> HttpResponse:
    log.warning("sso sign-in refused: %s (from %s)", reason, client_ip(request))
    return render(request, "sso/refused.html", {"reason": reason, "title": "Sign-in refused"}, status=status)


def _safe_next(request: HttpRequest, candidate: str | None) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("admin:index")


@require_GET
def sso_login(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider with a fresh state, nonce and PKCE challenge (kept in the session)."""
    if not sso_enabled():
        return _refused(request, "single sign-on is not configured here", 404)
    try:
        provider_metadata()
        client = oidc_client()
    except SsoUnavailable as exc:
        return _refused(request, str(exc), 503)
    request.session[NEXT_KEY] = _safe_next(request, request.GET.get("next"))
    return client.authorize_redirect(request, request.build_absolute_uri(reverse("sso-callback")))


@require_GET
def sso_callback(request: HttpRequest) -> HttpResponse:
    if not sso_enabled():
        return _refused(request, "single sign-on is not configured here", 404)
    try:
        provider_metadata()
        client = oidc_client()
    except SsoUnavailable as exc:
        return _refused(request, str(exc), 503)
    if request.GET.get("error"):
        return _refused(request, f"the identity provider answered {request.GET['error'][:100]!r}", 400)
    try:
        token = client.authorize_access_token(request, claims_options=id_token_claims_options())
    except TOKEN_ERRORS as exc:
        detail = getattr(exc, "description", None) or getattr(exc, "error", None) or type(exc).__name__
        return _refused(request, f"the sign-in response did not check out: {str(detail)[:200]}", 400)
    raw = dict(token.get("userinfo") or {})
    if not raw:
        return _refused(request, "the identity provider sent no ID token", 400)
    if settings.OIDC_GROUPS_CLAIM.split(".")[0] not in raw and provider_metadata().get("userinfo_endpoint"):
        # Groups travel in the userinfo answer at some providers; its subject must be the ID token's.
        try:
            extra = dict(client.userinfo(token=token))
        except TOKEN_ERRORS:
            extra = {}
        if extra.get("sub") == raw.get("sub"):
            raw = {**extra, **raw}
    claims = claims_read(raw, groups_claim=settings.OIDC_GROUPS_CLAIM)
    try:
        user = sso_sign_in(
            claims=claims, allowed_domains=settings.OIDC_ALLOWED_EMAIL_DOMAINS, ip_address=client_ip(request)
        )
    except SsoRefused as exc:
        return _refused(request, str(exc), 403)
    next_url = request.session.pop(NEXT_KEY, None)
    login(request, user, backend=SESSION_BACKEND)  # a new session key: nothing of the old session survives but this
    request.session[ID_TOKEN_KEY] = token.get("id_token", "")
    log.info("sso sign-in: user %s, groups %s", user.pk, list(claims.groups))
    return HttpResponseRedirect(_safe_next(request, next_url))


@require_POST
def sso_logout(request: HttpRequest) -> HttpResponse:
    """The admin's logout: end the session here, then at the provider when it offers RP-initiated logout."""
    id_token = request.session.get(ID_TOKEN_KEY)
    logout(request)
    after = request.build_absolute_uri(reverse("admin:login"))
    if id_token:
        try:
            end_session = provider_metadata().get("end_session_endpoint")
        except SsoUnavailable:
            end_session = None
        if end_session:
            return oidc_client().logout_redirect(request, post_logout_redirect_uri=after, id_token_hint=id_token)
    return HttpResponseRedirect(after)
