"""Who may talk to the review app.

- **Host header**: on a loopback bind only ``127.0.0.1``, ``localhost`` and ``[::1]`` (with the port)
  are served, so a web page cannot reach the app through DNS rebinding.
- **Cross-site posts**: a POST whose ``Origin`` is another site (or ``null``) is refused, so a page in
  the reviewer's browser cannot save reviews behind their back.
- **Token**: when the app has one (required off loopback) every request carries it as
  ``Authorization: Bearer <token>`` or in the cookie that opening ``/?token=<token>`` once sets
  (HttpOnly, SameSite=Strict; the response redirects to the same URL without the token, so it does
  not stay in the address bar or history). Anything else gets 401. Compared in constant time.

The access log written here has method, path and status, never the query string or headers.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

COOKIE = "distill_review_token"
log = logging.getLogger("distill.review.access")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null"
    "Cache-Control": "no-store",
}


def _same(supplied: str | None, token: str) -> bool:
    return supplied is not None and hmac.compare_digest(supplied.encode("utf-8"), token.encode("utf-8"))


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def guard(token: str | None, allowed_hosts: set[str] | None):
    """The middleware (``app.middleware("http")(guard(...))``)."""

    async def middleware(request: Request, call_next) -> Response:
        response = await _check(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        log.info("%s %s %d", request.method, request.url.path, response.status_code)
        return response

    async def _check(request: Request, call_next) -> Response:
        host = request.headers.get("host", "").lower()
        if allowed_hosts is not None and host not in allowed_hosts:
            return PlainTextResponse("unexpected Host header", status_code=400)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host):
                return PlainTextResponse("cross-site request refused", status_code=403)
        if not token:
            return await call_next(request)
        if _same(_bearer(request), token) or _same(request.cookies.get(COOKIE), token):
            return await call_next(request)
        if request.method == "GET" and _same(request.query_params.get("token"), token):
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            redirect = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            redirect.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return redirect
        return PlainTextResponse("401: this review app needs its token (Authorization: Bearer <token>, or open "
                                 "the URL printed at start once)", status_code=401,
                                 headers={"WWW-Authenticate": "Bearer"})

    return middleware
