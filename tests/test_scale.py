"""Labelling in shards, merging response caches, and the settings of the Ray engine (fast: no DVC, no Ray).

The 2-shard labelling through the real `dvc` is in tests/test_scale_dvc.py, the Ray engine's parity with
the polars engine in tests/test_scale_ray.py (both slow).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from distill import jsonl, pipeline
from distill.cli import main
from distill.config import LabelConfig, MergeConfig, PrefilterConfig
from distill.errors import ConfigError, InputError
from distill.filterspec import load_filter_at
from distill.labeling.cache import ResponseCache, merge_caches
from distill.providers.base import ChatResponse
from distill.scale.shard import shard_of, write_shards

from .conftest import REAL_FILTER, ROOT

SPEC = load_filter_at(REAL_FILTER.parents[1], REAL_FILTER.parent.name, REAL_FILTER.name)


# ----------------------------------------------------------------------------- shards
def test_a_records_shard_is_the_sha256_of_its_id_modulo_n():
    for rid in ("bbc-tech-1", "energy-42", "", "Zürich:7"):
        by_hand = int(hashlib.sha256(rid.encode("utf-8")).hexdigest()[:16], 16)
        for n in (1, 2, 3, 7):
            assert shard_of(rid, n) == by_hand % n
    assert shard_of("bbc-tech-1", 1) == 0


def _passed(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "title": "t", "text": f"text of {i} é"}, ensure_ascii=False) + "\n"
                            for i in ids), encoding="utf-8")


def test_shards_hold_every_line_once_in_input_order_and_a_record_never_moves(tmp_path):
    ids = [f"r{i}" for i in range(200)]
    _passed(tmp_path / "passed.jsonl", ids)
    counts = write_shards(tmp_path / "passed.jsonl", tmp_path / "shards", 3)
    lines = (tmp_path / "passed.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    shards = [(tmp_path / f"shards/{i}/passed.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
              for i in range(3)]
    assert counts == [len(s) for s in shards] and sum(counts) == 200 and min(counts) > 40
    for i, shard in enumerate(shards):  # the very lines, in the input's order, each where its id says
        assert shard == [x for x in lines if shard_of(json.loads(x)["id"], 3) == i]
    # more records: none of the earlier ones changes shard
    _passed(tmp_path / "passed.jsonl", ["new-a", *ids, "new-b"])
    write_shards(tmp_path / "passed.jsonl", tmp_path / "shards", 3)
    for i in range(3):
        again = [json.loads(x)["id"] for x in (tmp_path / f"shards/{i}/passed.jsonl").read_text().splitlines()]
        assert [r for r in again if r.startswith("r")] == [json.loads(x)["id"] for x in shards[i]]


def test_fewer_shards_remove_the_extra_ones_and_an_empty_shard_is_an_empty_file(tmp_path):
    _passed(tmp_path / "passed.jsonl", [f"r{i}" for i in range(50)])
    write_shards(tmp_path / "passed.jsonl", tmp_path / "shards", 4)
    (tmp_path / "shards/notes").mkdir()  # not a shard: left alone
    write_shards(tmp_path / "passed.jsonl", tmp_path / "shards", 2)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["0", "1", "notes"]
    _passed(tmp_path / "one.jsonl", ["r1"])
    assert sorted(write_shards(tmp_path / "one.jsonl", tmp_path / "few", 3)) == [0, 0, 1]
    assert sum((tmp_path / f"few/{i}/passed.jsonl").stat().st_size == 0 for i in range(3)) == 2


def test_shard_refuses_a_missing_input_and_a_line_without_id(tmp_path):
    with pytest.raises(InputError, match="run the prefilter stage first"):
        write_shards(tmp_path / "nope.jsonl", tmp_path / "s", 2)
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "x"}\n{"text": "no id"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: not a record with an id"):
        write_shards(tmp_path / "bad.jsonl", tmp_path / "s", 2)
    assert not (tmp_path / "s/0/passed.jsonl").exists()  # nothing half written


def test_distill_shard_takes_the_number_of_shards_from_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _passed(tmp_path / "data/prefiltered/passed.jsonl", [f"r{i}" for i in range(30)])
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["label"]["shards"] = [0, 1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = CliRunner().invoke(main, ["shard"])
    assert res.exit_code == 0, res.output
    assert "data/shards/0/passed.jsonl" in res.output and not (tmp_path / "data/shards/2").exists()
    res = CliRunner().invoke(main, ["shard", "--shards", "3", "--out", "elsewhere"])
    assert res.exit_code == 0 and (tmp_path / "elsewhere/2/passed.jsonl").is_file()
    params["label"]["shards"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = CliRunner().invoke(main, ["shard"])
    assert res.exit_code == 2 and "give --shards N, or set label.shards" in res.output


@pytest.mark.parametrize("shards", [[1, 2], [0, 2], [1, 0], []])
def test_label_shards_must_be_the_numbers_from_0(shards):
    with pytest.raises(ValidationError, match=r"shard numbers 0 to N-1 in order, e.g. \[0, 1, 2, 3\]"):
        LabelConfig(shards=shards)
    assert LabelConfig(shards=[0, 1, 2]).shards == [0, 1, 2]


# ----------------------------------------------------------------------------- merge and the label stage
def _label_row(rid: str, text: str) -> dict:
    answer = {d: 5 for d in SPEC.dimension_names} | {"reasoning": "r"}
    return {"id": rid, "title": "", "text": text, "messages": SPEC.render({"id": rid, "text": text}),
            "label": answer, **SPEC.labelled(answer)}


WORDS = ["the", "grid", "now", "takes", "power", "from", "a", "solar", "farm", "of", "forty", "hectares", "near",
         "the", "town"]


def _text(i: int) -> str:
    return " ".join(WORDS[i % 5:] + [f"word{i}"] + WORDS[: i % 5] + [f"tail{i} other{i} more{i}"])


def test_merge_reads_every_shard_and_refuses_a_missing_or_stale_one(tmp_path):
    extra = tmp_path / "extra"
    cfg = MergeConfig(extra_dir=str(extra), reviews=str(tmp_path / "none.jsonl"), output_dir=str(tmp_path / "m"))
    jsonl.write_jsonl(extra / "shard-0.jsonl", [_label_row("a", _text(1)), _label_row("b", _text(2))])
    with pytest.raises(InputError, match=r"shard-1\.jsonl not found: run the label_shards stage \(python "
                                         r"stages/label\.py --shard 1\)"):
        pipeline.merge(cfg, SPEC, None, metrics_dir=tmp_path, shards=[0, 1])
    jsonl.write_jsonl(extra / "shard-1.jsonl", [_label_row("c", _text(3))])
    jsonl.write_jsonl(extra / "other-oracle.jsonl", [_label_row("d", _text(4))])
    metrics = pipeline.merge(cfg, SPEC, tmp_path / "ignored.jsonl", metrics_dir=tmp_path, shards=[0, 1])
    rows = list(jsonl.read_jsonl(tmp_path / "m/labels.jsonl"))
    assert [(r["id"], os.path.basename(r["label_file"])) for r in rows] == [
        ("a", "shard-0.jsonl"), ("b", "shard-0.jsonl"), ("c", "shard-1.jsonl"), ("d", "other-oracle.jsonl")]
    assert metrics["inputs"] == 3
    with pytest.raises(ConfigError, match="merge needs the label stage's labels.jsonl, or label.shards"):
        pipeline.merge(cfg, SPEC, None, metrics_dir=tmp_path)
    jsonl.write_jsonl(extra / "shard-2.jsonl", [_label_row("e", _text(5))])  # left by a 3-shard run
    for shards in ([0, 1], None):
        with pytest.raises(InputError, match=r"shard-2\.jsonl: shard label file\(s\) that label\.shards"):
            pipeline.merge(cfg, SPEC, tmp_path / "labels.jsonl", metrics_dir=tmp_path, shards=shards)


def test_label_shard_names_the_setting_and_the_stage_to_run(tmp_path):
    from distill.providers.registry import oracle_config

    oracle = oracle_config(provider="openai", model="m", api_key_env="NO_SUCH_KEY_FOR_TEST")
    with pytest.raises(ConfigError, match=r"--shard 2: label.shards is \[0, 1\]"):
        pipeline.label_shard(LabelConfig(shards=[0, 1]), oracle, SPEC, 2, tmp_path)
    with pytest.raises(ConfigError, match=r"--shard 0: label.shards is None"):
        pipeline.label_shard(LabelConfig(), oracle, SPEC, 0, tmp_path)
    with pytest.raises(InputError, match=r"shards/1/passed\.jsonl not found: run the shard stage first"):
        pipeline.label_shard(LabelConfig(shards=[0, 1], shard_dir=str(tmp_path / "shards")), oracle, SPEC, 1,
                             tmp_path)


def test_the_label_stage_refuses_to_label_everything_when_shards_are_set(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["label"]["shards"] = [0, 1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DISTILL_PARAMS": str(tmp_path / "params.yaml"), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "stages/label.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "label.shards is [0, 1]: label each shard with `python stages/label.py --shard I`" in proc.stderr


# ----------------------------------------------------------------------------- cache merge
def _cache(path, answers: dict[str, str]) -> None:
    c = ResponseCache(path)
    for key, text in answers.items():
        c.put(key, "openai", "m", ChatResponse(text, 10, 2, "stop", "m"))
    c.close()


def _answers(path) -> dict[str, str]:
    c = ResponseCache(path)
    try:
        keys = [k for (k,) in c._db.execute("SELECT key FROM responses")]
        return {k: c.get(k).text for k in keys}
    finally:
        c.close()


def test_cache_merge_copies_what_is_missing_keeps_what_is_there_and_is_idempotent(tmp_path):
    _cache(tmp_path / "a.sqlite", {"k1": "one", "k2": "two"})
    _cache(tmp_path / "b.sqlite", {"k2": "two", "k3": "three", "k4": "four?"})
    _cache(tmp_path / "target.sqlite", {"k4": "four"})
    report = merge_caches(tmp_path / "target.sqlite", [tmp_path / "a.sqlite", tmp_path / "b.sqlite"])
    assert [(s["copied"], s["present"], s["differing"]) for s in report["sources"]] == [(2, 0, 0), (1, 1, 1)]
    assert report["answers"] == 4
    assert _answers(tmp_path / "target.sqlite") == {"k1": "one", "k2": "two", "k3": "three", "k4": "four"}
    again = merge_caches(tmp_path / "target.sqlite", [tmp_path / "b.sqlite", tmp_path / "a.sqlite"])
    assert sum(s["copied"] for s in again["sources"]) == 0 and again["answers"] == 4
    # a new target is created; the CLI says what it did
    res = CliRunner().invoke(main, ["cache", "merge", str(tmp_path / "new.sqlite"), str(tmp_path / "b.sqlite")])
    assert res.exit_code == 0, res.output
    assert "3 answer(s) copied, 0 already there" in res.output and _answers(tmp_path / "new.sqlite")["k4"] == "four?"


def test_cache_merge_refuses_what_is_not_a_cache(tmp_path):
    _cache(tmp_path / "t.sqlite", {"k": "v"})
    (tmp_path / "notes.txt").write_text("not sqlite at all " * 100)
    res = CliRunner().invoke(main, ["cache", "merge", str(tmp_path / "t.sqlite"), str(tmp_path / "notes.txt")])
    assert res.exit_code == 2 and "notes.txt: not a distill response cache" in res.output
    res = CliRunner().invoke(main, ["cache", "merge", str(tmp_path / "t.sqlite"), str(tmp_path / "gone.sqlite")])
    assert res.exit_code == 2 and "gone.sqlite: no such response cache" in res.output
    res = CliRunner().invoke(main, ["cache", "merge", str(tmp_path / "t.sqlite"), str(tmp_path / "t.sqlite")])
    assert res.exit_code == 2 and "is the target cache itself" in res.output
    assert _answers(tmp_path / "t.sqlite") == {"k": "v"}


# ----------------------------------------------------------------------------- the Ray engine's settings
def test_the_ray_engine_without_ray_installed_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "x"}\n')
    cfg = PrefilterConfig(input=str(tmp_path / "in.jsonl"), output_dir=str(tmp_path / "out"), engine="ray")
    with pytest.raises(ConfigError, match=r"pip install 'distill\[scale\]'.*or set prefilter.engine=polars"):
        pipeline.prefilter(cfg, SPEC, metrics_dir=tmp_path)
    assert not (tmp_path / "out/passed.jsonl").exists()


def test_prefilter_engine_is_polars_or_ray():
    with pytest.raises(ValidationError, match="engine"):
        PrefilterConfig(input="x.jsonl", engine="spark")
