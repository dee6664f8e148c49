"""API clients for the DRF tests: a logged-in person, or the operator's master key."""

from __future__ import annotations

from rest_framework.test import APIClient


def client_for(user) -> APIClient:
    """An API client with ``user``'s session, as if they had logged in to the admin."""
    client = APIClient()
    client.force_login(user)
    return client


def master_client(master_key: str) -> APIClient:
    """An API client sending the master key as a bearer token (the operator's provisioning path)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {master_key}")
    return client
