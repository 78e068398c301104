"""distill: reproducible LLM knowledge distillation.

The library behind the DVC stages in ``stages/``. Everything here is importable and testable without
DVC or Hydra; heavy dependencies (torch, transformers, trl, peft, llama_cpp) are imported lazily inside
the functions that need them.
"""

__version__ = "0.1.0"
