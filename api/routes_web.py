"""The web page at `/`: static HTML + ES modules from `api/web/`, no build step.

The page is a client of the public `/v1` API like any other (same auth, same errors), so
it needs nothing from the server but its files. They are served without auth (they hold
no data) and with a strict Content-Security-Policy (api/headers.py, on `/` and every file
under `/web/`): everything comes from this origin, nothing from a CDN, never framed.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent / "web"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        WEB_DIR / "index.html",
        headers={"Cache-Control": "no-cache"},  # the CSP: api/headers.py
    )


def install(app: FastAPI) -> None:
    """Mount the page (`/`) and its assets (`/web/...`) on the app."""
    app.include_router(router)
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
