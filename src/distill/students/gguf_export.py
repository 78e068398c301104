"""A merged LoRA student as a GGUF file for llama.cpp, with an Ollama Modelfile.

What the ``gguf`` package (0.19) offers is the file format: ``GGUFWriter``, ``GGUFReader`` and the map from
Hugging Face tensor names to llama.cpp's (``TensorNameMap``). The Hugging Face to GGUF converter itself
(``convert_hf_to_gguf.py``) lives in the llama.cpp repository and ships in no package installed here, so
this module writes what it can verify: the **llama** and **qwen2** architectures (SmolLM2, Llama, Qwen2 /
2.5 students) with a byte-level BPE tokenizer, in float32 (or float16), the Q/K projections permuted as
llama.cpp's converter permutes them for llama. The tokenizer comes from the base's own GGUF when the base
was one (the packaged SmolLM2: vocabulary, merges and llama.cpp's pre-tokenizer name), else from
``tokenizer.json``, with the llama.cpp pre-tokenizer that splits text as the student's does
(:func:`pre_tokenizer_name`; the parity check then compares llama.cpp's token ids of every prompt with the
student's). Other architectures or pre-tokenizers: export ``--format merged`` and run llama.cpp's
converter on it.

The chat template written into the GGUF is the student's tokenizer's; the Modelfile's ``TEMPLATE`` is the
same template written as Ollama's Go template. A Go template cannot express every Jinja template, so the
student's template is taken apart into what it writes before and after each role's content and the
generation prompt (:func:`role_wrapping`), and that is checked to render every test prompt exactly as
the tokenizer does; the export's parity check then runs the GGUF in llama.cpp on prompts rendered that
way, which is what Ollama will send it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import ConfigError

#: transformers architecture -> (GGUF architecture, whether Q and K are permuted for llama.cpp's rope)
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "Qwen2ForCausalLM": ("qwen2", False)}
_PROBE = {"system": "SYSTEM-PROBE-1f3a", "user": "USER-PROBE-7c2d", "assistant": "ASSISTANT-PROBE-9e4b"}


class ExportError(ConfigError):
    """An export that cannot be made, or that does not behave like the student."""


def _permute(w, n_head: int):
    """llama.cpp's order of the rotary halves (what its converter does to q_proj and k_proj)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tokenizer, path: Path, source_gguf: Path | None = None, dtype: str = "f32") -> None:
    """Write the (merged, float) causal LM ``model`` and ``tokenizer`` as a GGUF file at ``path``."""
    import gguf
    import numpy as np

    cfg = model.config
    arch = (cfg.architectures or [type(model).__name__])[0]
    if arch not in ARCHITECTURES:
        raise ExportError(f"GGUF export writes {', '.join(ARCHITECTURES)} models; this student's base is {arch}. "
                          "Export --format merged and convert that folder with llama.cpp's convert_hf_to_gguf.py")
    name, permute = ARCHITECTURES[arch]
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(cfg, "rope_theta", 10000.0)
    writer = gguf.GGUFWriter(str(path), name)
    writer.add_name(Path(str(getattr(cfg, "_name_or_path", "") or "distill-student")).name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _write_tokenizer(writer, tokenizer, cfg.vocab_size, source_gguf)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[name.upper()], cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and tied:
            continue
        new = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ExportError(f"GGUF export: no llama.cpp name for the tensor {key} of {arch}")
        data = tensor.detach().float().cpu().numpy()
        if permute and key.endswith("self_attn.q_proj.weight"):
            data = _permute(data, n_head)
        elif permute and key.endswith("self_attn.k_proj.weight"):
            data = _permute(data, n_kv)
        if dtype == "f16" and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(new, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_tokenizer(writer, tokenizer, vocab_size: int, source_gguf: Path | None) -> None:
    import gguf

    if source_gguf is not None:  # the base's own GGUF: its vocabulary, merges and pre-tokenizer, as llama.cpp read them
        reader = gguf.GGUFReader(str(source_gguf))
        for field in reader.fields.values():
            if field.name.startswith("tokenizer.ggml.") and not field.name.endswith(("_token_id",)):
                kind = field.types[0]
                sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
                writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    else:
        model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
        if model.get("type") != "BPE":
            raise ExportError(f"GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')}: export "
                              "--format merged and convert it with llama.cpp's convert_hf_to_gguf.py")
        by_id = {i: t for t, i in tokenizer.get_vocab().items()}
        special = set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()}
        tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
        types = [gguf.TokenType.UNUSED if i not in by_id else gguf.TokenType.CONTROL if by_id[i] in special
                 else gguf.TokenType.NORMAL for i in range(vocab_size)]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_add_bos_token(False)
    for setter, value in ((writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id),
                          (writer.add_bos_token_id, tokenizer.bos_token_id),
                          (writer.add_unk_token_id, tokenizer.unk_token_id)):
        if value is not None:
            setter(int(value))
    writer.add_chat_template(tokenizer.chat_template)


#: the Hugging Face pre-tokenizers llama.cpp reproduces, by the regex they split on before the byte-level
#: map, and llama.cpp's name for each (``tokenizer.ggml.pre``): GPT-2's (a plain ``ByteLevel``), SmolLM's
#: (GPT-2's after one digit a piece), Qwen2's and Llama 3's
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3 = _QWEN2.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
PRE_TOKENIZERS = {(_GPT2,): "gpt-2", ("digits", _GPT2): "smollm", (_QWEN2,): "qwen2", (_LLAMA3,): "llama-bpe"}


def hf_pre_tokenizer(name: str):
    """The Hugging Face pre-tokenizer that splits text as llama.cpp's pre-tokenizer ``name`` does (one of
    :data:`PRE_TOKENIZERS`'), or None."""
    from tokenizers import Regex, pre_tokenizers

    key = next((k for k, v in PRE_TOKENIZERS.items() if v == name), None)
    if key is None:
        return None
    steps = []
    for step in key:
        if step == "digits":
            steps.append(pre_tokenizers.Digits(individual_digits=True))
        elif step == _GPT2:
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True))
        else:
            steps += [pre_tokenizers.Split(Regex(step), behavior="isolated", invert=False),
                      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]
    return steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)


def pre_tokenizer_name(tokenizer) -> str:
    """llama.cpp's name for the student's pre-tokenizer (how text is split before BPE merges), found from
    its ``tokenizer.json``; an ExportError when llama.cpp has none that splits text the same way."""
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    key: list[str] = []
    for step in steps:
        kind = step.get("type")
        if kind == "Digits" and step.get("individual_digits"):
            key.append("digits")
        elif kind == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
            key.append((step.get("pattern") or {}).get("Regex", "?"))
        elif kind == "ByteLevel" and step.get("use_regex", True):
            key.append(_GPT2)
        elif kind != "ByteLevel":
            key.append(f"{kind}?")
    name = PRE_TOKENIZERS.get(tuple(key))
    if name is None:
        raise ExportError(f"GGUF export: llama.cpp has no pre-tokenizer known here to split text as this student's "
                          f"tokenizer does ({json.dumps(pre)[:200]}); export --format merged and convert that folder "
                          "with llama.cpp's convert_hf_to_gguf.py")
    return name


# ----------------------------------------------------------------------------- the chat template
def role_wrapping(tokenizer) -> dict[str, Any]:
    """What the chat template writes around each role's content, and the generation prompt, found by
    rendering probe conversations (system, then user, then assistant)."""
    def render(messages, gen=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    msgs = [{"role": r, "content": c} for r, c in _PROBE.items()]
    r0, r1, r2, r3 = render(msgs[:1]), render(msgs[:2]), render(msgs[:2], True), render(msgs)
    if not (r1.startswith(r0) and r2.startswith(r1) and r3.startswith(r1)):
        raise ExportError("the student's chat template does not render a conversation message by message, so no "
                          "Modelfile TEMPLATE can reproduce it: serve the merged export with its tokenizer instead")
    parts = {"system": r0, "user": r1[len(r0):], "assistant": r3[len(r1):]}
    wrapping: dict[str, Any] = {"generation": r2[len(r1):]}
    for role, text in parts.items():
        if text.count(_PROBE[role]) != 1:
            raise ExportError(f"the student's chat template changes the {role} message's text; no Modelfile TEMPLATE "
                              "can reproduce it")
        before, after = text.split(_PROBE[role])
        wrapping[role] = [before, after]
    return wrapping


def render_wrapped(wrapping: dict[str, Any], messages: list[dict[str, str]]) -> str:
    """A prompt as the Modelfile's TEMPLATE renders it (and as Ollama sends it to the model)."""
    body = "".join(wrapping[m["role"]][0] + m["content"] + wrapping[m["role"]][1] for m in messages)
    return body + wrapping["generation"]


def go_template(wrapping: dict[str, Any]) -> str:
    for part in [wrapping["generation"], *(p for role in ("system", "user", "assistant") for p in wrapping[role])]:
        if "{{" in part or '"""' in part:
            raise ExportError("the chat template's markers contain '{{' or '\"\"\"', which a Modelfile cannot hold")
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{wrapping[role][0]}{{{{ .Content }}}}'
        f"{wrapping[role][1]}" for i, role in enumerate(("system", "user", "assistant")))
    return f"{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{wrapping['generation']}"


#: where an export keeps the answer's JSON schema when the student decodes under it
SCHEMA_FILE = "answer.schema.json"


def modelfile(wrapping: dict[str, Any], gguf_name: str, stop: str, num_ctx: int, max_new_tokens: int,
              constrained: bool = False) -> str:
    schema = (f"# The student was evaluated decoding under {SCHEMA_FILE}: send it as the request's `format`\n"
              if constrained else "")
    return (f"# Written by `distill export`: the student's own chat template, greedy decoding as in evaluation\n"
            f"{schema}FROM ./{gguf_name}\n"
            f'TEMPLATE """{go_template(wrapping)}"""\n'
            f'PARAMETER stop "{stop}"\n'
            "PARAMETER temperature 0\n"
            f"PARAMETER num_ctx {num_ctx}\n"
            f"PARAMETER num_predict {max_new_tokens}\n")


# ----------------------------------------------------------------------------- llama.cpp
def generate_gguf(path: str, prompts: list[str], max_new_tokens: int, n_ctx: int,
                  schemas: list[dict[str, Any] | None] | None = None, layout: dict[str, Any] | None = None,
                  read: list[str] | None = None) -> dict[str, list]:
    """Greedy answers (``texts``) of the GGUF at ``path`` in llama.cpp to already rendered ``prompts``, and
    the token ids llama.cpp reads each of ``read`` as (``read_tokens``; default the prompts). Run it through
    :func:`distill.isolation.call_isolated`: a crash in llama.cpp must not take the caller down.

    With ``schemas`` (one per prompt, None: free), each answer is decoded under its JSON schema in
    ``layout`` as the student decodes (:mod:`distill.students.guided`): the same llguidance grammar masks
    llama.cpp's logits at every step, over the GGUF's own vocabulary, and the best allowed token is taken.
    Every token is the model's pick, none is forced in ahead of it (the embedded oracle's fast-forward
    would write the grammar's own tokenisation of a key, which the student may not have chosen)."""
    import os

    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=os.cpu_count() or 1, verbose=False, seed=0)
    schemas = schemas or [None] * len(prompts)
    vocab = None
    out = []
    for text, schema in zip(prompts, schemas):
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        if schema is None:
            result = llm.create_completion(tokens, max_tokens=max_new_tokens, temperature=0.0, top_k=1, top_p=1.0,
                                           repeat_penalty=1.0)
            out.append(result["choices"][0]["text"])
            continue
        if vocab is None:
            from distill.providers._llama_worker import guidance_vocab

            vocab = guidance_vocab(llm)
        out.append(_guided_gguf(llm, vocab, tokens, schema, layout, max_new_tokens))
    tokens = [llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) for text in (read or prompts)]
    return {"texts": out, "read_tokens": tokens}


def _guided_gguf(llm, vocab, prompt: list[int], schema: dict[str, Any], layout: dict[str, Any] | None,
                 max_new_tokens: int) -> str:
    """One greedy answer under ``schema``: the embedded oracle's token pick (:mod:`distill.providers._llama_worker`)
    without its fast-forward; ``vocab``: its (end-of-generation ids, llguidance tokenizer)."""
    import llguidance
    import numpy as np

    from distill.providers._llama_worker import pick_token
    from distill.students.guided import grammar

    eog, lltok = vocab
    n_vocab = llm.n_vocab()
    matcher = llguidance.LLMatcher(lltok, grammar(schema, layout), log_level=0)
    if matcher.is_error():
        raise ValueError(f"the answer schema cannot be turned into a grammar: {matcher.get_error()}")
    llm.eval(prompt)
    answer: list[int] = []
    while len(answer) < max_new_tokens and not matcher.is_stopped():  # stopped: only the turn's end is left
        token = pick_token(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,)), matcher, n_vocab)
        if token in eog or not matcher.consume_token(token):
            break
        answer.append(token)
        llm.eval([token])
    return llm.detokenize(answer).decode("utf-8", errors="replace")
