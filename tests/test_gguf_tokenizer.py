"""A GGUF export splits text as the student does: the pre-tokenizer written into the GGUF
(``tokenizer.ggml.pre``) is the one under which llama.cpp reads every probe text as the same token ids as
the student's Hugging Face tokenizer, and each other name llama.cpp knows reads some probe differently (so
the probe tells them apart), but for the digit-grouping twin of a vocabulary without digit merges. Tiny
tokenizers trained here, tiny random models: seconds, no download."""

from __future__ import annotations

import pytest

from distill.students.gguf_export import ExportError, hf_pre_tokenizer, pre_tokenizer_name
from tests.tiny_lm import build_tokenizer

#: text that each pair of pre-tokenizers splits differently somewhere: numbers of 1 to 6 digits, quotes
#: against words, contractions, runs of spaces and newlines, JSON, non-ASCII
PROBES = [
    'He said "hello" and it\'s 2024, not 12345 or 7.',
    '{"deployment_stage": 3, "scale": 10, "reasoning": "about 1,600 MW"}',
    "Lines\n\n  indented   text\r\nwith\ttabs and 123456 units; we'll SEE'S it.",
    "Zürich – “quotes” 3.14 € and naïve café 2025-05-01",
]
#: what the tokenizers learn their merges from: the probes' kinds of text, many times
TRAINING = PROBES * 3 + [f"{n} and {n * 7} units, \"{w}\" it's {w}'s" for n in range(1, 400, 7)
                         for w in ("solar", "wind", "hello")]
NAMES = ["gpt-2", "smollm", "qwen2", "llama-bpe", "default"]
#: a vocabulary learnt from one digit a piece has no merges between digits, so the pre-tokenizer that differs
#: from its own only by grouping digits reads every text the same way
TWINS = {"smollm": "gpt-2", "qwen2": "llama-bpe"}


def _pre(kind: str):
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Whitespace() if kind == "whitespace" else hf_pre_tokenizer(kind)


def gguf_with_pre(src, dst, pre: str) -> None:
    """A copy of the GGUF ``src`` at ``dst`` whose ``tokenizer.ggml.pre`` says ``pre``."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = pre if field.name == "tokenizer.ggml.pre" else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_tokens(paths: list[str], texts: list[str]) -> dict[str, list[list[int]]]:
    """Each GGUF's token ids for ``texts`` in llama.cpp (run in a child: native code)."""
    from llama_cpp import Llama

    out = {}
    for path in paths:
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        out[path] = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in texts]
    return out


def _export_tokenizer(tmp_path, kind: str):
    """A tokenizer with the ``kind`` pre-tokenizer, and a tiny random model with its vocabulary written as a
    GGUF: (the tokenizer, the GGUF). The tokenizer object is used as built: ``AutoTokenizer`` would give a
    Qwen2 checkpoint Qwen2's own pre-tokenizer whatever its tokenizer.json says."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from distill.students.gguf_export import write_gguf

    tokenizer = build_tokenizer(tmp_path / kind, TRAINING, vocab_size=500, pre_tokenizer=_pre(kind))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=128, tie_word_embeddings=True))
    write_gguf(model, tokenizer, tmp_path / f"{kind}.gguf")
    return tokenizer, tmp_path / f"{kind}.gguf"


@pytest.mark.parametrize("kind", ["gpt-2", "smollm", "qwen2", "llama-bpe"])
def test_the_gguf_reads_text_as_the_student_does_and_no_other_pre_tokenizer_would(tmp_path, kind):
    pytest.importorskip("llama_cpp")
    import gguf

    from distill.isolation import call_isolated

    tokenizer, path = _export_tokenizer(tmp_path, kind)
    assert pre_tokenizer_name(tokenizer) == kind
    assert gguf.GGUFReader(str(path)).fields["tokenizer.ggml.pre"].contents() == kind
    others = {}
    for name in NAMES:
        if name != kind:
            others[name] = tmp_path / f"{kind}-as-{name}.gguf"
            gguf_with_pre(path, others[name], name)
    read = call_isolated(llama_cpp_tokens, runtime="llama.cpp", doing="tokenizing",
                         paths=[str(path), *map(str, others.values())], texts=PROBES)
    student = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in PROBES]
    assert read[str(path)] == student
    for name, other in others.items():
        if TWINS.get(kind) == name:
            assert read[str(other)] == student
        else:
            assert read[str(other)] != student, f"the probes do not tell {kind} from {name}"


def test_a_pre_tokenizer_llama_cpp_does_not_reproduce_is_refused_naming_the_way_out(tmp_path):
    tokenizer = build_tokenizer(tmp_path, TRAINING, vocab_size=500, pre_tokenizer=_pre("whitespace"))
    with pytest.raises(ExportError, match=r"no pre-tokenizer .*Whitespace.*--format merged.*convert_hf_to_gguf"):
        pre_tokenizer_name(tokenizer)
