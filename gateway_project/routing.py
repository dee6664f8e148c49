"""Websocket routes (channels). Consumers authenticate with the admin session."""

from django.urls import path

from apps.teams.consumers import LiveTrafficConsumer

websocket_urlpatterns: list = [
    path("ws/admin/live/", LiveTrafficConsumer.as_asgi(), name="ws-admin-live"),
]
