"""The service's structured access log: one JSON line per request with its id, method, route, status, latency, the
caller's key name (never the key) and the model that answered, and nothing else (no query, no body, no file name,
no header), so no patient data can reach the log."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from typing import Any

ACCESS_LOGGER = "medassist.serve.access"


class JsonFormatter(logging.Formatter):
    """Formats a record's ``fields`` dict (or its message) as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {"message": record.getMessage()}
        return json.dumps({"time": round(record.created, 3), "level": record.levelname.lower(), **fields})


def access_logger(stream: Any = None) -> logging.Logger:
    """The access logger, writing JSON lines to ``stream`` (stderr by default); set up once per process."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # its own lines only: not repeated by whatever the root logger prints
    if not any(getattr(h, "medassist_access", False) for h in logger.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.medassist_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


def new_request_id() -> str:
    return uuid.uuid4().hex


class AccessLog:
    """Pure ASGI middleware: gives each HTTP request an id (``X-Request-ID`` answer header and
    ``scope["state"]["request_id"]``) and logs one line when it has answered; ``metrics`` (a
    :class:`~medassist.serve.metrics.ServiceMetrics`, if given) counts it by route, status and model."""

    def __init__(self, app: Any, metrics: Any = None) -> None:
        self.app = app
        self.logger = access_logger()
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The route's template (e.g. /v1/images), never the raw path, which a client controls.
            route = getattr(scope.get("route"), "path", None) or "(no route)"
            state = scope["state"]
            seconds = time.perf_counter() - start
            self.logger.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope.get("method", ""),
                        "route": route,
                        "status": status["code"],
                        "latency_ms": round(seconds * 1000.0, 3),
                        "key": state.get("key_name"),
                        "model": state.get("model"),
                    }
                },
            )
            if self.metrics is not None:
                self.metrics.request(route, status["code"], state.get("model") or "", seconds)
