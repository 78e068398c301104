"""Kill the review app with SIGKILL in the middle of a burst of saves: every save it acknowledged is there
after a restart, and the exported file is whole."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time

import httpx

from distill.merge import answer_hash
from tests.review_project import free_port, make_project, read_jsonl, start_server, stop_server

N = 160
WRITERS = 4


def test_every_acknowledged_review_survives_a_sigkill(tmp_path):
    make_project(tmp_path, n=N)
    hashes = {r["id"]: answer_hash(r["label"]) for r in read_jsonl(tmp_path / "data/labels/labels.jsonl")}
    port = free_port()
    proc = start_server(tmp_path, port)
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(k: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for i in range(k, N, WRITERS):
                if stop.is_set():
                    return
                rid, note = f"rec-{i}", f"note {i} from writer {k}"
                try:
                    r = c.post(f"/records/{rid}/review", data={"answer_hash": hashes[rid], "is_correct": "false",
                                                               "note": note, "then": "stay"})
                except httpx.HTTPError:
                    return  # the server is gone: this save was never acknowledged
                if r.status_code == 303:
                    with lock:
                        acked[rid] = note

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < N // 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # mid-burst: writers are still sending
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert N // 3 <= len(acked) < N, "the kill must land during the burst"
    # the store itself holds them (not only the exported file, which a restart imports too)
    db = sqlite3.connect(tmp_path / ".distill/reviews.sqlite")
    in_store = dict(db.execute("SELECT record_id, note FROM reviews").fetchall())
    db.close()
    assert {rid: in_store.get(rid) for rid in acked} == acked

    proc = start_server(tmp_path, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            stored = {r["id"]: r["note"] for r in c.get("/api/reviews").json()}
    finally:
        stop_server(proc)
    missing = {rid: note for rid, note in acked.items() if stored.get(rid) != note}
    assert not missing, f"{len(missing)} acknowledged review(s) lost: {sorted(missing)[:5]}"
    # the restart exported the store again; the file is complete JSON lines, never a torn write
    exported = {r["id"]: r["note"] for r in read_jsonl(tmp_path / "data/reviews/reviews.jsonl")}
    assert exported == stored
    assert json.loads((tmp_path / "metrics/review.json").read_text())["reviewed"] == len(stored)
