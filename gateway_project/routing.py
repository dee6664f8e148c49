"""Websocket routes (channels). Consumers authenticate with the admin session."""

websocket_urlpatterns: list = []
