"""Serve the dashboard's static files at /ui (no authentication: the page itself asks for a key)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"


def mount_ui(app: FastAPI) -> None:
    """Mount the dashboard; /ui redirects to its page."""

    @app.get("/ui", include_in_schema=False)
    def ui() -> RedirectResponse:
        return RedirectResponse("/ui/index.html")

    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")
