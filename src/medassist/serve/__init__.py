"""The point-of-care service over verified bundles: ``medassist serve`` (FastAPI, uvicorn, a web page)."""

from __future__ import annotations

from medassist.serve.app import create_app, serve
from medassist.serve.config import ServeConfig
from medassist.serve.limits import Limits, Refused
from medassist.serve.served import load_served

__all__ = ["Limits", "Refused", "ServeConfig", "create_app", "load_served", "serve"]
