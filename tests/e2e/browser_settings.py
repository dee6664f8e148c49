"""Settings for the uvicorn server the browser tests start: the test settings, plus static files
served from the apps' directories (no collectstatic step before a test run)."""

from gateway_project.settings.test import *  # noqa: F403

WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
