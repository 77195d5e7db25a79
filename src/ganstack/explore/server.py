"""The explorer's web server: a Starlette app with one static page and two JSON endpoints.

``GET /``              the page (``static/index.html``, its script and style sheet; nothing is
                       fetched from anywhere else)
``GET /api/model``     the model: its levels (noise inputs, top to bottom, each with the outputs
                       it changes), outputs (coarse to fine), classes, example captions
``POST /api/sample``   ``{seeds: {z1: 3, z0: 8}, y: 7, caption: "...", text_seed: 0,
                       interpolate: {input: "z0", seed_b: 9, t: 0.5, strip: 8}}`` ->
                       ``{outputs: {name: PNG data URL}, strip: [...], ms}``

Starlette (with uvicorn to serve it) rather than Gradio: two small packages instead of a
large one that brings its own front end and, unless told otherwise, analytics and CDN
fetches; the page is plain HTML and JavaScript that works offline (docs/explorer.md).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from ganstack.errors import GanstackError, MissingDependencyError
from ganstack.explore import ExploreError, Explorer, Request

BODY_MAX = 64 << 10  # bytes: a request is a few hundred
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}


def require_server() -> None:
    """A clear error when the ``explore`` extra (starlette, uvicorn) is not installed."""
    import importlib.util

    for package in ("starlette", "uvicorn"):
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, "explore", "ganstack explore")


def static_file(name: str) -> bytes:
    return resources.files("ganstack.explore").joinpath("static").joinpath(name).read_bytes()


def create_app(explorer: Explorer) -> Any:
    """The Starlette app serving ``explorer``."""
    require_server()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    described = explorer.describe()
    # No caching: a page from an earlier run on the same port must not show up.
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    async def page(request: HttpRequest) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in STATIC:
            return Response("not found", 404)
        return Response(static_file(name), media_type=STATIC[name], headers=headers)

    async def model(request: HttpRequest) -> Response:
        return JSONResponse(described, headers=headers)

    async def sample(request: HttpRequest) -> Response:
        body = await request.body()
        if len(body) > BODY_MAX:
            return JSONResponse({"error": "request too large"}, 413)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return JSONResponse({"error": "the request is not JSON"}, 400)
        t0 = time.perf_counter()
        try:
            req = Request.parse(data, explorer)
            res = await run_in_threadpool(explorer.render, req)
        except ExploreError as e:
            return JSONResponse({"error": str(e)}, 400)
        except GanstackError as e:  # e.g. a caption encoder that is not installed
            return JSONResponse({"error": str(e)}, 422)
        res["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return JSONResponse(res, headers=headers)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", page),
            Route("/api/model", model),
            Route("/api/sample", sample, methods=["POST"]),
        ]
    )


def serve(
    explorer: Explorer, host: str = "127.0.0.1", port: int = 7860, log_level: str = "warning"
) -> None:
    """Serve ``explorer`` until interrupted."""
    import uvicorn

    app = create_app(explorer)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
