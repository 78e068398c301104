"""Stage outputs are written atomically: nothing half-written looks complete, a killed writer's
temporary file is cleaned up by the next run, and the finished file has the usual mode."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from distill import jsonl

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys, time
from distill import jsonl
with jsonl.AtomicWriter(sys.argv[1]) as out:
    out.write({"n": 1})
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_writer_leaves_no_output_and_its_temp_file_is_removed_by_the_next(tmp_path):
    target = tmp_path / "labels.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert not target.exists() and len(leftovers) == 1 and leftovers[0].startswith(".labels.jsonl.tmp-")

    jsonl.write_jsonl(target, [{"n": 2}])
    assert [p.name for p in tmp_path.iterdir()] == ["labels.jsonl"]
    assert list(jsonl.read_jsonl(target)) == [{"n": 2}]


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    target = tmp_path / "labels.jsonl"
    with jsonl.AtomicWriter(target) as first:
        first.write({"a": 1})
        jsonl.write_jsonl(tmp_path / "other.jsonl", [])  # another output in the same folder
        with jsonl.AtomicWriter(target):  # same pid: its own temp file is not stale
            assert first._tmp.exists()
    assert list(jsonl.read_jsonl(target)) == [{"a": 1}]


def test_outputs_get_the_mode_a_plain_open_gives(tmp_path):
    old = os.umask(0o022)
    try:
        jsonl.write_jsonl(tmp_path / "a.jsonl", [{"x": 1}])
        jsonl.write_json(tmp_path / "m.json", {"x": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.jsonl": 0o644, "m.json": 0o644, "plain.txt": 0o644}
