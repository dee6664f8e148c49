"""Delivering one alert: the payloads (documented in docs/operations.md) and the three channel kinds.

- webhook: ``POST`` of ``webhook_payload(event)`` as JSON;
- slack: ``POST`` of a Block Kit message (``slack_payload``) to an incoming-webhook URL;
- email: one message to the channel's addresses through Django's e-mail backend.

Tenants choose these URLs, so posting uses the proxy's guards: the URL is checked like a deployment's
``api_base`` (no metadata or link-local hosts; private ones only with PROXY_ALLOW_PRIVATE_UPSTREAMS),
host names are resolved by ``SafeResolver`` (DNS rebinding to such an address is refused at connect
time), redirects are not followed and the answer is not read beyond its status. A URL is never
logged or recorded: the delivery record says the channel's name and what came back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from apps.monitoring.models import AlertChannel, AlertEvent
from apps.proxy.crypto import decrypt
from apps.proxy.resolver import SafeResolver
from apps.proxy.upstreams import api_base_problem

logger = logging.getLogger(__name__)

SLACK_FIELDS_MAX = 10  # Block Kit: at most 10 fields in a section
SLACK_TEXT_MAX = 3000  # Block Kit: a section's text
SLACK_HEADER_MAX = 150  # Block Kit: a header's plain text


def webhook_payload(event: AlertEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "type": event.rule,
        "subject": event.subject,
        "window_id": event.window_id,
        "title": event.title,
        "text": event.text,
        "organization_id": event.organization_id,
        "team_id": event.team_id,
        "facts": event.facts,
        "created_at": (event.created_at or timezone.now()).isoformat(),
    }


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters: tenant-typed names must not become links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: AlertEvent) -> dict[str, Any]:
    """A Block Kit message: header, the text, the facts as fields, and what/which window as context.

    ``text`` is the notification's fallback (shown where blocks are not, e.g. push notifications).
    """
    fields = [
        {"type": "mrkdwn", "text": f"*{_slack_escape(str(name))}*\n{_slack_escape(str(value))}"}
        for name, value in list(event.facts.items())[:SLACK_FIELDS_MAX]
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": event.title[:SLACK_HEADER_MAX], "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(event.text)[:SLACK_TEXT_MAX] or " "}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    context = f"{event.rule} | {event.subject} | window {event.window_id}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(context)}]})
    return {"text": event.title, "blocks": blocks}


def email_message(event: AlertEvent) -> tuple[str, str]:
    subject = f"[LLM gateway] {event.title}"
    lines = [event.text, ""]
    lines += [f"{name}: {value}" for name, value in event.facts.items()]
    lines += ["", f"Alert {event.rule} about {event.subject}, window {event.window_id}."]
    return subject, "\n".join(lines) + "\n"


async def _post(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> str:
    problem = api_base_problem(url)
    if problem:
        return "refused: the URL " + problem.rstrip(".")
    timeout = aiohttp.ClientTimeout(total=settings.ALERT_DELIVERY_TIMEOUT_SECONDS)
    try:
        async with session.post(url, json=payload, timeout=timeout, allow_redirects=False) as response:
            return str(response.status)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        # ValueError: aiohttp's AddressRefused and malformed URLs. The name only: messages may hold the URL.
        return f"failed: {type(exc).__name__}"


async def _post_all(posts: list[tuple[str, dict[str, Any]]]) -> list[str]:
    connector = aiohttp.TCPConnector(resolver=SafeResolver())
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        return await asyncio.gather(*(_post(session, url, payload) for url, payload in posts))


def post_json_many(posts: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """POST each (url, payload) concurrently; one status per post ("200", "failed: ...", "refused: ...")."""
    return async_to_sync(_post_all)(posts) if posts else []


def _email(channel: AlertChannel, event: AlertEvent) -> str:
    recipients = channel.recipient_list()
    if not recipients:
        return "no recipients"
    subject, body = email_message(event)
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
    except Exception as exc:  # SMTP refusals and outages: recorded on the event and channel, not raised
        logger.warning("alert %s: e-mail to channel %s failed: %s", event.pk, channel.pk, type(exc).__name__)
        return f"failed: {type(exc).__name__}"
    return "sent"


def _url(channel: AlertChannel) -> str | None:
    try:
        return decrypt(channel.url_encrypted) or None
    except ValueError:
        logger.error("alert channel %s: its URL cannot be decrypted", channel.pk)
        return None


def alert_deliver(event: AlertEvent, channels: list[AlertChannel], *, extra_webhooks: list[str] = ()) -> list[dict]:
    """Send ``event`` to every channel (and the operator's ``extra_webhooks``); returns what each answered."""
    records: list[dict] = []
    posts: list[tuple[str, dict[str, Any]]] = []
    posted: list[dict] = []
    for channel in channels:
        record = {"channel": channel.name, "channel_id": channel.pk, "kind": channel.kind, "status": ""}
        records.append(record)
        if channel.kind == AlertChannel.Kind.EMAIL:
            record["status"] = _email(channel, event)
            continue
        url = _url(channel)
        if url is None:
            record["status"] = "no usable URL"
            continue
        payload = slack_payload(event) if channel.kind == AlertChannel.Kind.SLACK else webhook_payload(event)
        posts.append((url, payload))
        posted.append(record)
    for url in extra_webhooks:
        record = {"channel": "GATEWAY_ALERT_WEBHOOK_URL", "channel_id": None, "kind": "webhook", "status": ""}
        records.append(record)
        posts.append((url, webhook_payload(event)))
        posted.append(record)
    for record, status in zip(posted, post_json_many(posts), strict=True):
        record["status"] = status
    return records
