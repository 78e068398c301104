"""The review app as a real server process: where it may listen, its token, and what it refuses."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import httpx
import pytest

from tests.review_project import env_for, free_port, make_project, read_jsonl, start_server, stop_server


@pytest.fixture
def project(tmp_path):
    make_project(tmp_path)
    return tmp_path


def _hash(project, rid: str) -> str:
    from distill.merge import answer_hash

    return answer_hash(next(r for r in read_jsonl(project / "data/labels/labels.jsonl") if r["id"] == rid)["label"])


def test_a_non_loopback_bind_without_a_token_refuses_to_start(project):
    port = free_port()
    for host in ("0.0.0.0", "192.0.2.10"):
        out = subprocess.run([sys.executable, "-m", "distill.cli", "review", "--host", host, "--port", str(port)],
                             cwd=project, env=env_for(project), capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 2, out
        assert f"error: refusing to listen on {host}" in out.stderr and "DISTILL_REVIEW_TOKEN" in out.stderr
        assert "Traceback" not in out.stderr
    with socket.socket() as s:  # nothing listens there
        assert s.connect_ex(("127.0.0.1", port)) != 0
    short = subprocess.run([sys.executable, "-m", "distill.cli", "review", "--host", "0.0.0.0", "--port", str(port)],
                           cwd=project, env=env_for(project, DISTILL_REVIEW_TOKEN="short"), capture_output=True,
                           text=True, timeout=60, check=False)
    assert short.returncode == 2 and "too short" in short.stderr


@pytest.fixture
def token_server(project):
    """``distill review --host 0.0.0.0 --new-token``: the token is read from the one line that shows it."""
    port = free_port()
    proc = start_server(project, port, "--host", "0.0.0.0", "--new-token")
    try:
        log = proc.log_path.read_text()
        token = re.search(r"open http://0\.0\.0\.0:\d+/\?token=(\S+)", log)[1]
        yield project, port, token, proc
    finally:
        stop_server(proc)


def test_every_request_without_the_token_gets_401(token_server):
    project, port, token, _ = token_server
    base = f"http://127.0.0.1:{port}"
    form = {"answer_hash": _hash(project, "rec-0"), "is_correct": "false", "then": "stay"}
    with httpx.Client(base_url=base) as c:
        for method, path in (("GET", "/records"), ("GET", "/records/rec-0"), ("GET", "/analytics"),
                             ("GET", "/static/review.js"), ("GET", "/api/reviews"), ("POST", "/export")):
            assert c.request(method, path).status_code == 401, path
        assert c.post("/records/rec-0/review", data=form).status_code == 401
        assert c.get("/records", headers={"Authorization": "Bearer " + token[:-1] + "x"}).status_code == 401
        assert c.get("/records", params={"token": "wrong" + token}).status_code == 401
        with httpx.Client(base_url=base, cookies={"distill_review_token": "nope"}) as other:
            assert other.get("/records").status_code == 401
        assert c.get("/api/reviews", headers={"Authorization": f"Bearer {token}"}).json() == []  # nothing was saved

        ok = c.get("/records", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and "rec-0" in ok.text
        # opening the printed URL once: a cookie, and a redirect that drops the token from the address
        first = c.get("/records", params={"token": token, "flag": "reasked"})
        assert first.status_code == 303 and first.headers["location"] == "/records?flag=reasked"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert c.get("/records").status_code == 200  # the cookie carries it now
        assert c.post("/records/rec-0/review", data=form).status_code == 303
        assert [r["id"] for r in c.get("/api/reviews").json()] == ["rec-0"]


def test_the_token_never_appears_in_logs_or_outputs(token_server):
    project, port, token, proc = token_server
    base = f"http://127.0.0.1:{port}"
    for path, supplied in (("/records", token), ("/records/rec-1", token), ("/records", "bad-" + token)):
        with httpx.Client(base_url=base) as fresh:  # no cookie yet: the token travels in the URL
            fresh.get(path, params={"token": supplied})
    with httpx.Client(base_url=base) as c:
        c.post("/records/rec-0/review", data={"answer_hash": _hash(project, "rec-0"), "is_correct": "true"},
               headers={"Authorization": f"Bearer {token}"})
        c.get("/analytics", headers={"Authorization": f"Bearer {token}"})
    stop_server(proc)
    log = proc.log_path.read_text()
    assert log.count(token) == 1 and f"?token={token}" in log.splitlines()[1]  # the start line, once
    # requests are logged, without their query
    assert "GET /records 303" in log and "GET /records/rec-1 303" in log and "GET /records 401" in log
    for path in project.rglob("*"):
        if path.is_file() and path != proc.log_path:
            assert token.encode() not in path.read_bytes(), path


def test_a_token_from_the_environment_is_never_printed(project):
    port = free_port()
    token = "env-token-0123456789abcdef"
    proc = start_server(project, port, env=env_for(project, DISTILL_REVIEW_TOKEN=token))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert c.get("/records").status_code == 401  # a token on loopback is required too
            assert c.get("/records", params={"token": token}).status_code == 303
    finally:
        stop_server(proc)
    log = proc.log_path.read_text()
    assert token not in log and "token from DISTILL_REVIEW_TOKEN" in log


def test_foreign_host_headers_and_cross_site_posts_are_refused(project):
    port = free_port()
    proc = start_server(project, port)
    form = {"answer_hash": _hash(project, "rec-0"), "is_correct": "false", "then": "stay"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert c.get("/records").status_code == 200
            assert c.get("/records", headers={"Host": f"localhost:{port}"}).status_code == 200
            # DNS rebinding: a page on evil.example resolving to 127.0.0.1
            assert c.get("/records", headers={"Host": f"evil.example:{port}"}).status_code == 400
            # a form on another site posting to the app
            for origin in ("http://evil.example", "null"):
                assert c.post("/records/rec-0/review", data=form, headers={"Origin": origin}).status_code == 403
            assert c.get("/api/reviews").json() == []
            same = c.post("/records/rec-0/review", data=form, headers={"Origin": f"http://127.0.0.1:{port}"})
            assert same.status_code == 303 and len(c.get("/api/reviews").json()) == 1
            page = c.get("/records/rec-2")
            assert "<script>alert(" not in page.text and "&lt;script&gt;alert(" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
    finally:
        stop_server(proc)
