"""Labelling in 2 shards through the real `dvc exp run` (the foreach stage of docs/scaling.md) against a
single-process run, in a temporary git copy of the project, with the oracle on the fake OpenAI server.

The demo corpus (79 records pass the rules). The fake oracle answers from a hash of the prompt, as a
temperature-0 oracle would, so the single run and the sharded runs must write the same merged labels
and the same splits; what is checked beyond that is who was asked what: with one shared cache each
record is asked once in all, and two shards labelled as on two machines (concurrent processes, each
with its own cache, merged afterwards with `distill cache merge`) cost one request per record in all,
after which the DVC run asks nothing. Slow: four DVC runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.dvc_project import copy_project, git_init, project_env, sh
from tests.fakes.openai_server import FakeOpenAI, first_user_message

pytestmark = pytest.mark.slow

KEY_ENV = "SCALE_DVC_KEY"
SPLITS = ("train.jsonl", "val.jsonl", "test.jsonl")




def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@-]+)'", output)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture(scope="module")
def project(tmp_path_factory, server):
    dst = tmp_path_factory.mktemp("scale-dvc") / "project"
    copy_project(dst)
    env = project_env(**{KEY_ENV: "sk-scale-dvc"})
    git_init(dst, env)
    return dst, env


def _oracle(server: FakeOpenAI, cache: str) -> list[str]:
    return ["oracle=openai", f"oracle.base_url={server.base_url}", f"oracle.api_key_env={KEY_ENV}",
            "oracle.model=fake-oracle", "label.progress=log", "label.concurrency=8", f"label.cache_path={cache}"]


def _exp_run(repo: Path, env: dict, overrides: list[str]) -> str:
    args = [sys.executable, "-m", "dvc", "exp", "run", "split"]
    for o in overrides:
        args += ["-S", o]
    return sh(args, repo, env)


def _sharded_dvc_yaml(repo: Path) -> None:
    """dvc.yaml with the label and merge stages replaced by docs/scaling.md's block, as a user would."""
    doc = (ROOT / "docs/scaling.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- label-shards:start -->\n```yaml\n(.*?)```", doc, re.DOTALL).group(1)
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    added = yaml.safe_load(block)
    assert set(added) == {"shard", "label_shards", "merge"}
    stages = {}
    for name, stage in dvc["stages"].items():
        if name == "label":
            stages.update(added)
        elif name != "merge":
            stages[name] = stage
    dvc["stages"] = stages
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))


def _merged(repo: Path) -> dict[str, dict]:
    """The merged label rows by id, without ``label_file`` (which names the file a row came from)."""
    rows = _lines(repo / "data/merged/labels.jsonl")
    return {r["id"]: {k: v for k, v in r.items() if k != "label_file"} for r in rows}


def _asked(server: FakeOpenAI, since: int) -> Counter[str]:
    return Counter(first_user_message(body) for body in server.requests[since:])


def test_two_shards_label_what_one_process_labels_and_ask_each_record_once(project, server):
    repo, env = project
    # 1. one process, the default dvc.yaml
    before = server.count
    out = _exp_run(repo, env, _oracle(server, ".distill/cache/single.sqlite"))
    assert _stages_run(out) == ["prefilter", "label", "merge", "split"]
    passed = _lines(repo / "data/prefiltered/passed.jsonl")
    single_asked = _asked(server, before)
    assert len(passed) >= 60 and len(single_asked) == len(passed) and set(single_asked.values()) == {1}
    single = _merged(repo)
    single_splits = {s: (repo / "data/split" / s).read_bytes() for s in SPLITS}
    assert len(single) == len(passed) and single_splits["train.jsonl"]

    # 2. two shards as two DVC stage instances, sharing a fresh cache
    _sharded_dvc_yaml(repo)
    sh(["git", "commit", "-qam", "label in shards"], repo, env)
    before = server.count
    out = _exp_run(repo, env, [*_oracle(server, ".distill/cache/shared.sqlite"), "label.shards=[0,1]"])
    assert sorted(_stages_run(out)) == ["label_shards@0", "label_shards@1", "merge", "shard", "split"]
    shard_ids = [[r["id"] for r in _lines(repo / f"data/shards/{i}/passed.jsonl")] for i in (0, 1)]
    assert all(shard_ids) and sorted(shard_ids[0] + shard_ids[1]) == sorted(r["id"] for r in passed)
    asked = _asked(server, before)  # each record asked once in all, by one shard or the other
    assert asked == single_asked
    for i in (0, 1):
        metrics = json.loads((repo / f"metrics/label-shard-{i}.json").read_text())
        assert metrics["requests"] == metrics["valid"] == len(shard_ids[i])
        assert {r["id"] for r in _lines(repo / f"data/labels_extra/shard-{i}.jsonl")} == set(shard_ids[i])
    assert _merged(repo) == single  # same rows, same answers, same scores
    assert {s: (repo / "data/split" / s).read_bytes() for s in SPLITS} == single_splits

    # 3. as on two machines: each shard in its own process with its own cache, at the same time
    base = _oracle(server, ".distill/cache/none.sqlite")
    before = server.count
    procs = []
    for i in (0, 1):
        params = repo.parent / f"params-machine-{i}.yaml"
        sh([sys.executable, "-m", "distill.cli", "config", "compose", "--output", str(params), *base,
             "label.shards=[0,1]", f"label.cache_path=.distill/cache/machine-{i}.sqlite"], repo, env)
        procs.append(subprocess.Popen([sys.executable, "stages/label.py", "--shard", str(i)], cwd=repo,
                                      env={**env, "DISTILL_PARAMS": str(params)}, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stdout.read()
    assert _asked(server, before) == single_asked  # no record asked by both
    merged = sh([sys.executable, "-m", "distill.cli", "cache", "merge", ".distill/cache/team.sqlite",
                  ".distill/cache/machine-0.sqlite", ".distill/cache/machine-1.sqlite"], repo, env)
    assert f".distill/cache/team.sqlite: {len(passed)} answer(s)" in merged
    # the DVC run then materialises both shards from the merged cache without a request
    before = server.count
    out = _exp_run(repo, env, [*_oracle(server, ".distill/cache/team.sqlite"), "label.shards=[0,1]"])
    assert {"label_shards@0", "label_shards@1"} <= set(_stages_run(out))
    assert server.count == before
    assert _merged(repo) == single
    assert {s: (repo / "data/split" / s).read_bytes() for s in SPLITS} == single_splits
