"""Log records an operator can search during an incident: the request id, and an optional JSON line format.

``request_id_var`` is set by the /v1 app at the start of every request (``apps.proxy.app``); anything
logged while that request runs, from any module, carries its id without being passed it. Lines written
outside a request (interval summaries, background tasks) carry none rather than a wrong one.

``LOG_FORMAT=json`` (settings) writes every line as one JSON object: ``time``, ``level``, ``logger``,
``message``, ``pid``, ``request_id`` where there is one, ``event_kind``/``event_count`` on the
once-per-interval lines of ``apps.common.intervallog``, and ``exc_info`` with the traceback.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("gateway_request_id", default=None)

# Attributes a record may carry through ``extra=`` that belong in the JSON line.
EXTRA_FIELDS = ("event_kind", "event_count")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on an odd argument (``default=str``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        # A message with a newline stays on one line (escaped): one event, one line, no forged entries.
        return json.dumps(line, default=str, ensure_ascii=False)


class WithoutTraceback(logging.Filter):
    """Keep the message, drop the traceback: for expected refusals such as ``DisallowedHost``.

    Anyone on the internet can send a bad Host header; Django logs each at ERROR with a 30-line
    traceback of its own middleware, which buries real errors. One line says everything there is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def configure(config: dict) -> None:
    """Django's ``LOGGING_CONFIG``: ``dictConfig``, and in JSON mode Python warnings through logging too.

    Without that a ``UserWarning`` is printed to stderr as two plain lines in the middle of the JSON ones.
    """
    from django.conf import settings

    logging.config.dictConfig(config)
    if getattr(settings, "LOG_FORMAT", "plain") == "json":
        logging.captureWarnings(True)
