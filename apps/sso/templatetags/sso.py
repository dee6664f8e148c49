"""What the admin's login page offers: the provider's button, the password form, or both."""

from __future__ import annotations

from django import template
from django.conf import settings

from apps.sso.client import sso_enabled

register = template.Library()


@register.simple_tag
def sso_login_options() -> dict:
    return {
        "enabled": sso_enabled(),
        "provider_name": settings.OIDC_PROVIDER_NAME,
        "password_login": settings.ADMIN_PASSWORD_LOGIN,
    }
