"""Tiny models built from a config for the student tests (no download): a byte-level BPE tokenizer trained
on the test data with a ChatML template, and a 2-layer Qwen2 pretrained for a few seconds on chats in the
answer format (it writes the format but does not know the task), plus the data they are trained on."""

from __future__ import annotations

import json
from pathlib import Path

from distill.filterspec import load_filter

SPEC = load_filter(Path(__file__).resolve().parents[1] / "filters/sustainability_tech_deployment/v1")
DIMS = SPEC.dimension_names

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


TOPICS = [("solar farm", 9), ("pilot electrolyser", 5), ("announced plan", 3), ("football", 0)]


def dataset(n: int, start: int = 0) -> list[dict]:
    return [example(i, *TOPICS[i % len(TOPICS)]) for i in range(start, start + n)]


def _random_score_chats(n: int) -> list[str]:
    """Chats in the answer format whose scores are random: what a base model learns from these is
    the format (keys, JSON, turn markers), not which score a kind of article gets."""
    import random

    rng = random.Random(1)
    chats = []
    for e in dataset(n, start=1000):
        label = {d: rng.randint(0, 10) for d in DIMS} | {
            "reasoning": json.loads(e["messages"][2]["content"])["reasoning"]
        }
        messages = [*e["messages"][:2], {"role": "assistant", "content": json.dumps(label)}]
        chats.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages))
    return chats


def build_tokenizer(root: Path, chat_template: str = CHAT_TEMPLATE):
    """The BPE tokenizer (vocabulary 400, trained on the test data), saved in ``root``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for e in dataset(40) for m in e["messages"]]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts * 5, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        bos_token=None,
    )
    fast.chat_template = chat_template
    fast.save_pretrained(root)
    return fast


def build_tiny_base(root: Path, pretrain_steps: int = 300) -> str:
    """A 2-layer Qwen2 with :func:`build_tokenizer`'s tokenizer, pretrained for a few seconds on chats in
    the answer format with random scores: it writes the format but does not know the task
    (``pretrain_steps=0``: random weights, for tests of the plumbing)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    fast = build_tokenizer(root)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = fast(_random_score_chats(48), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for _ in range(pretrain_steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(root)
    return str(root)


