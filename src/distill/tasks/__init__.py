"""Task kinds: what a filter asks the oracle, how answers are checked, labelled and evaluated.

:data:`KINDS` is the one place a kind is named: ``filter.yaml``'s ``kind:`` picks the class (``score``
when absent, for the rubric filters written before kinds existed). Each kind is a module holding a
:class:`~distill.tasks.base.Task` subclass.
"""

from __future__ import annotations

from distill.tasks.answer import AnswerTask
from distill.tasks.base import PrefilterRules, Task
from distill.tasks.classify import ClassifyTask
from distill.tasks.extract import ExtractTask
from distill.tasks.generate import GenerateTask
from distill.tasks.score import ScoreTask
from distill.tasks.translate import TranslateTask

KINDS: dict[str, type[Task]] = {
    "score": ScoreTask,
    "classify": ClassifyTask,
    "extract": ExtractTask,
    "answer": AnswerTask,
    "translate": TranslateTask,
    "generate": GenerateTask,
}

__all__ = ["KINDS", "AnswerTask", "ClassifyTask", "ExtractTask", "GenerateTask", "PrefilterRules", "ScoreTask", "Task",
           "TranslateTask"]
