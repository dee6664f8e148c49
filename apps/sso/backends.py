"""Password sign-in for the admin, which operators can switch off once single sign-on is in place.

With ``ADMIN_PASSWORD_LOGIN=off`` only the break-glass accounts (``ADMIN_BREAK_GLASS_USERS``, and only
while they are superusers) still sign in with a password: the way back in when the provider is down.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.backends import ModelBackend


def password_login_allowed(user) -> bool:
    if settings.ADMIN_PASSWORD_LOGIN:
        return True
    return bool(user.is_superuser and user.get_username() in settings.ADMIN_BREAK_GLASS_USERS)


class PasswordLoginBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None or not password_login_allowed(user):
            return None
        return user
