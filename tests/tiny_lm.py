"""Tiny models built here from a config, for the student tests: no download, seconds of CPU.

:func:`build_tokenizer` trains a byte-level BPE tokenizer on the texts given, with a ChatML template;
:func:`build_tiny_base` adds a 2-layer Qwen2 pretrained for a few seconds on chats in the task's answer
format, so it writes the format (turn markers, JSON keys) without knowing the task; the LoRA student then
learns the task on top. The score-task data most student tests share (:data:`SPEC`, :func:`dataset`,
:func:`score_texts`, :func:`score_chats`) is here too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from distill.filterspec import load_filter

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_text(messages: list[dict[str, str]]) -> str:
    """A conversation as the chat template writes it (what pretraining reads)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def build_tokenizer(root: Path, texts: list[str], chat_template: str | None = CHAT_TEMPLATE, vocab_size: int = 400,
                    pre_tokenizer=None):
    """A byte-level BPE tokenizer trained on ``texts`` (``chat_template`` None: none), saved in ``root``;
    ``pre_tokenizer``: how text is split before the merges (default GPT-2's, a plain ``ByteLevel``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<pad>", bos_token=None)
    fast.chat_template = chat_template
    fast.save_pretrained(root)
    return fast


def build_tiny_base(root: Path, texts: list[str], chats: list[str], steps: int = 300, vocab_size: int = 400,
                    max_positions: int = 512, threads: int | None = None) -> str:
    """Save the tokenizer and the tiny model, pretrained ``steps`` steps on ``chats`` (0: random weights,
    for tests of the plumbing), under ``root``; return its path. ``threads``: torch threads while
    pretraining (1 is 20x faster than 2 spinning threads on busy shared cores)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    fast = build_tokenizer(root, texts, vocab_size=vocab_size)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    if steps:
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        batch = fast(chats, return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            for _ in range(steps):
                loss = model(**batch, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        finally:
            torch.set_num_threads(before)
    model.save_pretrained(root)
    return str(root)


# ----------------------------------------------------------------------------- a score task's data
SPEC = load_filter(Path(__file__).resolve().parents[1] / "filters/sustainability_tech_deployment/v1")
DIMS = SPEC.dimension_names
TOPICS = [("solar farm", 9), ("pilot electrolyser", 5), ("announced plan", 3), ("football", 0)]


def example(i: int, topic: str, score: int) -> dict:
    label = {d: score for d in DIMS} | {"reasoning": f"about {topic}"}
    overall, tier = SPEC.score({d: score for d in DIMS})
    user = f"Article {i}: the {topic} project is described here. " + ("operating " * (score // 2))
    return {
        "id": f"ex-{i}", "tier": tier, "overall": overall, "scores": {d: score for d in DIMS},
        "messages": [
            {"role": "system", "content": "Rate it."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": json.dumps(label)},
        ],
    }


def dataset(n: int, start: int = 0) -> list[dict]:
    """``n`` score examples whose scores follow the topic (the score rises with the words "operating")."""
    return [example(i, *TOPICS[i % len(TOPICS)]) for i in range(start, start + n)]


def score_texts() -> list[str]:
    """What the score tokenizer is trained on: every message of 40 examples."""
    return [m["content"] for e in dataset(40) for m in e["messages"]]


def score_chats(n: int = 48) -> list[str]:
    """Chats in the answer format whose scores are random: what a base model learns from these is
    the format (keys, JSON, turn markers), not which score a kind of article gets."""
    rng = random.Random(1)
    chats = []
    for e in dataset(n, start=1000):
        reasoning = json.loads(e["messages"][2]["content"])["reasoning"]
        label = {d: rng.randint(0, 10) for d in DIMS} | {"reasoning": reasoning}
        chats.append(chat_text([*e["messages"][:2], {"role": "assistant", "content": json.dumps(label)}]))
    return chats


def build_score_base(root: Path, steps: int = 300) -> str:
    """The tiny base for the score task: tokenizer on :func:`score_texts`, pretrained on :func:`score_chats`."""
    return build_tiny_base(root, score_texts(), score_chats(48), steps=steps)


def served_batch_after_batch(model_dir, rows: list[dict], task) -> list[dict]:
    """What `distill infer` / `distill chat` rely on: one child serves the student batch after batch (the
    first three rows, then the rest) with the answers a one-shot predict gives; the child ends with the
    Predictor. Returns the first batch's predictions."""
    from distill.inference import Predictor
    from distill.students import predict

    direct = predict(model_dir, rows, task)  # one child, one call
    with Predictor(model_dir, task) as predictor:
        first = predictor(rows[:3])
        thread = predictor._thread
        second = predictor(rows[3:])
        assert predictor._thread is thread and thread.is_alive()  # the same child answered both batches
    assert first + second == direct
    assert not thread.is_alive()
    return first
