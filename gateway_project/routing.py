"""Websocket routes (channels). Consumers authenticate with the admin session."""

from django.urls import path

from apps.console.consumers import LiveTrafficConsumer

websocket_urlpatterns: list = [
    path("ws/admin/live/", LiveTrafficConsumer.as_asgi(), name="ws-admin-live"),
]
