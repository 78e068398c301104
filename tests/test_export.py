"""`distill export`: every format read back by its consumer (datasets, the OpenAI chat rules, trl, csv,
json), invalid and empty exports refused with the reason."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from click.testing import CliRunner

from distill import jsonl
from distill.chatformat import chat_problems, example_tokens
from distill.errors import InputError
from distill.export import FORMATS, export_split
from distill.filterspec import load_filter_at
from distill.split import to_chat

from .conftest import REAL_FILTER


def CHARS4(text: str) -> int:
    return math.ceil(len(text) / 4)


@pytest.fixture(scope="module")
def spec():
    return load_filter_at(REAL_FILTER.parents[1], REAL_FILTER.parent.name, REAL_FILTER.name)


def _chat(spec, rid: str, score: int, reviewed: str | None = None) -> dict:
    record = {"id": rid, "title": f"Title {rid}", "text": f"The solar farm {rid} now delivers power to the grid."}
    answer = {d: score for d in spec.dimension_names} | {"reasoning": f"because {rid}"}
    row = {**record, "messages": spec.render(record), "label": answer, **spec.labelled(answer)}
    if reviewed:
        row["reviewed"] = reviewed
    return to_chat(row, spec)


@pytest.fixture()
def split_dir(tmp_path, spec):
    parts = {"train": [_chat(spec, "t1", 9, "correct"), _chat(spec, "t2", 2), _chat(spec, "t3", 5, "corrected")],
             "val": [_chat(spec, "v1", 7)], "test": [_chat(spec, "x1", 1, "correct")]}
    for s, rows in parts.items():
        jsonl.write_jsonl(tmp_path / "split" / f"{s}.jsonl", rows)
    return tmp_path / "split", parts


def test_every_format_is_read_back_by_its_consumer(tmp_path, split_dir, spec):
    from datasets import Dataset, load_from_disk

    src, parts = split_dir
    out = tmp_path / "export"
    summary = export_split(src, out, spec, list(FORMATS))
    assert summary["sizes"] == {"train": 3, "val": 1, "test": 1} and set(summary["written"]) == set(FORMATS)
    assert summary["token_count"] == "chars/4 estimate"  # tiktoken's file is not on this machine
    want = {s: [r["messages"] for r in rows] for s, rows in parts.items()}

    hf = load_from_disk(str(out / "hf"))
    assert sorted(hf) == ["test", "train", "val"]
    assert {s: list(hf[s]["messages"]) for s in hf} == want
    assert hf["train"]["id"] == ["t1", "t2", "t3"] and hf["train"]["tier"] == [r["tier"] for r in parts["train"]]

    card = (out / "parquet" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["configs"][0]["data_files"] == [{"split": s, "path": f"{s}.parquet"} for s in ("train", "val", "test")]
    assert "train: 3 · val: 1 · test: 1" in card and (out / "hf" / "README.md").is_file()
    for s, messages in want.items():
        ds = Dataset.from_parquet(str(out / "parquet" / f"{s}.parquet"), cache_dir=str(tmp_path / "cache"))
        assert list(ds["messages"]) == messages

    for s, messages in want.items():
        lines = list(jsonl.read_jsonl(out / "openai" / f"{s}.jsonl"))
        assert [set(x) for x in lines] == [{"messages"}] * len(messages)
        assert all(chat_problems(x, 65_536, CHARS4) == [] for x in lines)
        assert [[m["role"] for m in x["messages"]] for x in lines] == [["system", "user", "assistant"]] * len(lines)
        assert [x["messages"] for x in lines] == messages

    alpaca = list(jsonl.read_jsonl(out / "alpaca" / "train.jsonl"))
    assert alpaca[0] == {"instruction": want["train"][0][0]["content"], "input": want["train"][0][1]["content"],
                         "output": want["train"][0][2]["content"]}
    assert json.loads(alpaca[1]["output"])["reasoning"] == "because t2"

    share = list(jsonl.read_jsonl(out / "sharegpt" / "val.jsonl"))
    assert [t["from"] for t in share[0]["conversations"]] == ["system", "human", "gpt"]
    assert [t["value"] for t in share[0]["conversations"]] == [m["content"] for m in want["val"][0]]

    with open(out / "csv" / "train.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["t1", "t2", "t3"]
    assert [[r["system"], r["user"], r["assistant"]] for r in rows] == [[m["content"] for m in x]
                                                                       for x in want["train"]]
    assert json.loads((out / "json" / "test.json").read_text())[0]["messages"] == want["test"][0]


def test_only_reviewed_records_on_request(tmp_path, split_dir, spec):
    src, _ = split_dir
    summary = export_split(src, tmp_path / "out", spec, ["openai"], which="reviewed")
    assert summary["sizes"] == {"train": 2, "val": 0, "test": 1}
    assert (tmp_path / "out/openai/val.jsonl").read_text() == ""


def test_an_invalid_answer_fails_the_export_naming_it_and_writes_nothing(tmp_path, split_dir, spec):
    src, parts = split_dir
    bad = json.loads(json.dumps(parts["val"][0]))
    answer = json.loads(bad["messages"][-1]["content"])
    answer[spec.dimension_names[0]] = 42  # out of the 0-10 range
    bad["messages"][-1]["content"] = json.dumps(answer)
    jsonl.write_jsonl(src / "val.jsonl", [bad])
    with pytest.raises(InputError) as e:
        export_split(src, tmp_path / "out", spec, list(FORMATS))
    msg = str(e.value)
    assert msg.startswith("1 record(s) cannot be exported as sustainability_tech_deployment training data: val/v1: "
                          f"schema: at {spec.dimension_names[0]}: 42 is greater than the maximum of 10")
    assert not (tmp_path / "out").exists()


def test_an_empty_export_fails_with_the_reason(tmp_path, spec):
    for s in ("train", "val", "test"):
        jsonl.write_jsonl(tmp_path / "split" / f"{s}.jsonl", [])
    with pytest.raises(InputError, match="nothing to export: the split holds no record"):
        export_split(tmp_path / "split", tmp_path / "out", spec, ["json"])
    jsonl.write_jsonl(tmp_path / "split" / "train.jsonl", [_chat(spec, "a", 3)])
    with pytest.raises(InputError, match="no record was reviewed as correct or corrected"):
        export_split(tmp_path / "split", tmp_path / "out", spec, ["json"], which="reviewed")
    with pytest.raises(InputError, match=r"no train.jsonl, val.jsonl, test.jsonl: run the split stage first"):
        export_split(tmp_path / "nowhere", tmp_path / "out", spec, ["json"])


@pytest.mark.parametrize("messages, problem", [
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], None),
    ([{"role": "user", "content": "q"}], "exactly one assistant turn expected, found 0"),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
      {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}], "exactly one assistant turn"),
    ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
     "a system message may only come first"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}], "the last message must be"),
    ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
     "turns must alternate user, assistant from a user turn: got user, user, assistant"),
    ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}], "content must be a non-empty"),
    ([{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}], "role 'tool' is not one of"),
    ([{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "a"}],
     "110 tokens, over the limit of 100"),  # 100 + 3 for the user turn, 1 + 3 for the answer, 3 for the reply
])
def test_openai_chat_rules(messages, problem):
    got = chat_problems({"messages": messages}, 100, CHARS4)
    assert (got == []) if problem is None else any(problem in p for p in got), got


def test_token_estimate_by_hand():
    assert example_tokens([{"role": "user", "content": "abcde"}], CHARS4) == 2 + 3 + 3


def test_export_command(tmp_path, split_dir, monkeypatch):
    from distill.cli import main

    src, _ = split_dir
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "filter": {"name": REAL_FILTER.parent.name, "version": REAL_FILTER.name, "root": str(REAL_FILTER.parents[1])},
        "split": {"output_dir": str(src)}}))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["export", "--format", "openai", "--format", "csv", "--output", "exp"])
    assert res.exit_code == 0, res.output
    assert "exported {'train': 3, 'val': 1, 'test': 1} (reviewed-or-validated; token counts by chars/4 estimate)" \
        in res.output
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["csv", "openai"]


# ----------------------------------------------------------------------------- trl, the real consumer
def _tiny_tokenizer_and_model(texts: list[str]):
    """A word-level tokenizer built from the data and a one-layer Llama from a config: nothing downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    words = sorted({w for t in texts for w in pre_tokenizers.Whitespace().pre_tokenize_str(t) for w in [w[0]]})
    vocab = {w: i for i, w in enumerate(specials + ["system", "user", "assistant"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)  # matched whole, before the whitespace split
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="<|im_end|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=vocab["<|im_end|>"])
    return fast, LlamaForCausalLM(config)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["openai", "sharegpt"])
def test_trl_sft_reads_the_chat_exports(tmp_path, split_dir, spec, fmt):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from trl.data_utils import is_conversational, maybe_convert_to_chatml

    src, parts = split_dir
    export_split(src, tmp_path / "out", spec, [fmt])
    ds = Dataset.from_json(str(tmp_path / "out" / fmt / "train.jsonl"), cache_dir=str(tmp_path / "cache"))
    if fmt == "sharegpt":  # trl renames from/value; ShareGPT's human/gpt are user/assistant (as axolotl maps them)
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        ds = ds.map(maybe_convert_to_chatml).map(
            lambda x: {"messages": [{"role": roles[m["role"]], "content": m["content"]} for m in x["messages"]]})
        ds = ds.remove_columns([c for c in ds.column_names if c != "messages"])
    assert is_conversational(ds[0])
    texts = [m["content"] for r in parts["train"] for m in r["messages"]]
    tokenizer, model = _tiny_tokenizer_and_model(texts)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_length=4096, max_steps=1, per_device_train_batch_size=3,
                     report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                     assistant_only_loss=False, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    tokenised = trainer.train_dataset
    assert len(tokenised) == 3 and "input_ids" in tokenised.column_names
    decoded = tokenizer.decode(tokenised[0]["input_ids"])
    answer = parts["train"][0]["messages"][-1]["content"]
    assert "assistant" in decoded and "because t1" in decoded and tokenizer.unk_token not in decoded
    assert json.loads(answer)["reasoning"] == "because t1"
    trainer.train()  # one step through trl's collator and the model: the examples are trainable as written
    assert trainer.state.global_step == 1


def test_the_readme_export_stage_block_declares_what_export_writes(tmp_path, split_dir, spec):
    """The README's stage block (for users who want DVC to track exports) names every folder the
    command writes, and its command runs."""
    import re

    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    block = yaml.safe_load(re.search(r"<!-- export-stage:start -->\n```yaml\n(.*?)```", readme, re.DOTALL).group(1))
    stage = block["export"]
    assert stage["cmd"] == "distill export --output data/export"
    src, _ = split_dir
    summary = export_split(src, tmp_path / "data/export", spec, list(FORMATS))
    assert sorted(stage["outs"]) == sorted(f"data/export/{fmt}" for fmt in summary["written"])
    assert {f"${{split.output_dir}}/{s}.jsonl" for s in ("train", "val", "test")} <= set(stage["deps"])
