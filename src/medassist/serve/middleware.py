"""The body limit: pure ASGI middleware that refuses an oversized request before the app reads it."""

from __future__ import annotations

import json
from typing import Any


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: a request body over ``max_bytes`` is answered 413 with ``message``, from its
    Content-Length before anything is read, or as soon as the bytes read pass the limit."""

    def __init__(self, app: Any, *, max_bytes: int, message: str) -> None:
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def _refuse(self, scope: dict[str, Any], send: Any) -> None:
        request_id = scope.get("state", {}).get("request_id")
        body = json.dumps({"detail": self.message, "request_id": request_id}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, send)
            return
        state = {"read": 0, "refused": False}

        async def limited_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.max_bytes:
                    state["refused"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not state["refused"]:  # the app's own answer to the cut body is replaced by the 413
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if state["refused"]:
            await self._refuse(scope, send)
