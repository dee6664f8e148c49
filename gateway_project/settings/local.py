"""Embedded default: SQLite, in-process counters, eager Celery, the mock provider. For a laptop."""

from .base import *  # noqa: F403
from .base import RUN_DIR, env_bool, persistent_secret

DEBUG = env_bool("DEBUG", True)
# The run command prints it; generated once into .run/ unless set.
GATEWAY_MASTER_KEY = persistent_secret("GATEWAY_MASTER_KEY", RUN_DIR)
