"""Starting the review app: where it may bind, its token, uvicorn.

Loopback (127.0.0.1, ::1, localhost) is the default and needs no token. Any other address needs one:
from ``DISTILL_REVIEW_TOKEN`` or made up with ``--new-token``, in which case the URL carrying it is
printed once, on the terminal, and never logged; without a token the app refuses to start.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import sys
from pathlib import Path

from distill.errors import ConfigError, require

TOKEN_ENV = "DISTILL_REVIEW_TOKEN"
MIN_TOKEN_CHARS = 16


class BindError(ConfigError):
    """The app may not listen there (a non-loopback address without a token)."""


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, new_token: bool, environ: dict[str, str] | None = None) -> tuple[str | None, bool]:
    """(token, generated): the token the app requires, or None on loopback without one."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV) or None
    if new_token:
        return secrets.token_urlsafe(24), True
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise BindError(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_CHARS} random characters "
                        "(or --new-token)")
    if token is None and not is_loopback(host):
        raise BindError(f"refusing to listen on {host}: off loopback every request must carry a token. Set "
                        f"{TOKEN_ENV} (at least {MIN_TOKEN_CHARS} random characters) or pass --new-token, or bind "
                        "127.0.0.1")
    return token, False


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """Host headers served on a loopback bind (DNS rebinding); None (any) off loopback, where the token guards."""
    if not is_loopback(host):
        return None
    return {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}


def serve(*, params_path: str, db_path: str, host: str, port: int, reviewer: str, new_token: bool,
          out=print) -> None:
    require("fastapi", "review")
    uvicorn = require("uvicorn", "review")
    require("multipart", "review")  # python-multipart: FastAPI reads forms with it
    from distill.review.app import ReviewState, create_app

    token, generated = resolve_token(host, new_token)
    state = ReviewState(params_path, db_path, reviewer=reviewer)
    state.export()
    app = create_app(state, token=token, allowed_hosts=allowed_hosts(host, port))
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown}:{port}/"
    n = len(state.dataset.items)
    out(f"distill review: {n} records, reviews in {Path(db_path)}; Ctrl-C to stop")
    if generated:  # the one place the token is shown: this terminal, once
        out(f"open {url}?token={token}")
    elif token:
        out(f"open {url} (token from {TOKEN_ENV})")
    else:
        out(f"open {url}")
    sys.stdout.flush()
    logging.getLogger("distill.review").setLevel(logging.INFO)
    uvicorn.run(app, host=host.strip("[]"), port=port, access_log=False, log_level="warning",
                server_header=False, date_header=False)
