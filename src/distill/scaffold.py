"""``distill filters new NAME --kind KIND``: a working task package to edit, for every task kind.

It writes ``<root>/<name>/<version>/`` (``filter.yaml`` with every field of the kind commented,
``prompt.md`` unless the kind is ``generate``, which takes its prompts from a template, and a
``README.md`` to finish) and ``<config_dir>/filter/<name>.yaml`` so that ``-S filter=<name>`` selects
it. The package is loaded back before the command returns: what it writes is what ``distill config
check`` and the label stage accept. Nothing existing is overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

from distill.errors import ConfigError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

_SCORE = """\
# __NAME__ (score): the oracle scores each record on the dimensions below (integers 0..scale_max);
# distill computes the overall score (weighted mean) and the tier. See README.md for every field.
name: __NAME__
version: __VERSION__
description: >-
  What this task judges, in one or two sentences (shown by `distill filters list`).
scale_max: 10

dimensions:                 # weights sum to 1
  - name: relevance
    weight: 0.6
    question: How much is the text about the subject this task is for?
    rubric:                 # anchor scores the oracle reads (any subset of 0..scale_max)
      0: not about it at all
      5: mentions it among other things
      10: entirely about it
  - name: evidence
    weight: 0.4
    question: How well are its claims backed by figures or sources?
    rubric:
      0: claims only
      5: some figures
      10: measured, sourced figures

tiers:                      # highest min_score first; the last one starts at 0
  - name: high
    min_score: 6.5
    description: clearly relevant and well supported
  - name: medium
    min_score: 3.5
    description: partly relevant or partly supported
  - name: low
    min_score: 0
    description: off topic or unsupported

system_prompt: >-
  You rate texts on a rubric. Judge only from the text. Reply with one JSON object and nothing else.
template: prompt.md

output:
  reasoning_max_chars: 300

prefilter:                  # cheap rules before any request (see the README's "Prefilter" section)
  min_words: 30
  min_english_share: 0.1
"""

_SCORE_PROMPT = """\
Rate the text below on each dimension with an integer from 0 to {scale_max}.

Dimensions (question, then anchor scores):
{rubric}

Title: {title}

{text}

Answer with one JSON object holding an integer for each of {dimension_names},
and a "reasoning" string of at most two short sentences.
"""

_CLASSIFY = """\
# __NAME__ (classify): the oracle picks one label (or several, multi_label: true) from the set below.
# Records may carry a gold label (-S +prefilter.field_map.gold=<column>): the label stage then measures
# the oracle against it. See README.md for every field.
kind: classify
name: __NAME__
version: __VERSION__
description: >-
  What the labels sort, in one or two sentences (shown by `distill filters list`).
labels:
  - name: positive
    description: what makes a record this label
  - name: negative
    description: what makes a record this label
  - name: neutral
    description: what makes a record this label
multi_label: false          # true: a list of labels, evaluated per label
rationale: true             # a short "rationale" string beside the label (kept, never scored)
rationale_max_chars: 200

system_prompt: >-
  You sort texts into labels. Judge from the text only. Reply with one JSON object and nothing else.
template: prompt.md

prefilter:
  min_words: 5
"""

_CLASSIFY_PROMPT = """\
Which label fits the text below? Choose exactly one of:
{labels}

Title: {title}

{text}

Answer with one JSON object: "label" (one of {label_names}) and "rationale" (one short sentence).
"""

_EXTRACT = """\
# __NAME__ (extract): the oracle lists the typed entities of each record (type and text as written).
# Records may carry gold entities (-S +prefilter.field_map.gold=<column>, a list of {type, text}).
# See README.md for every field.
kind: extract
name: __NAME__
version: __VERSION__
description: >-
  Which entities to pull out of a text, in one or two sentences (shown by `distill filters list`).

entity_types:
  - name: person
    description: a named individual; not a title alone
  - name: organisation
    description: a named company, club, party or public body
  - name: place
    description: a named country, region, city or other location

require_spans_in_text: true   # an entity whose text is not in the record is sent back to the oracle
max_entities: 50

gold:
  match: exact              # exact | partial: how a gold entity agrees with the oracle's
  min_f1: 1.0               # a record's gold agrees with the oracle from this F1

system_prompt: >-
  You list the named entities of texts. Use only what the text says. Reply with one JSON object and
  nothing else.
template: prompt.md

prefilter:
  min_words: 10
"""

_EXTRACT_PROMPT = """\
List the named entities of the text below, of these types:
{entity_types}

Title: {title}

{text}

Answer with one JSON object: "entities", a list of objects with "type" (one of {entity_type_names})
and "text" (the name exactly as the text writes it). List each entity once. Leave out anything that is
not named in the text.
"""

_ANSWER = """\
# __NAME__ (answer): the oracle answers each record's question under answer_schema below (a record's
# own `answer_schema` column wins). Records may carry a golden answer (-S +prefilter.field_map.gold=
# <column>), compared as gold.compare says. See README.md for every field.
kind: answer
name: __NAME__
version: __VERSION__
description: >-
  What questions this task answers, in one or two sentences (shown by `distill filters list`).

reasoning: true             # a "reasoning" string before the answer (kept, never compared)
reasoning_max_chars: 1200
answer_schema:              # the answer's JSON schema (an object); `answer_field` is what is compared
  type: object
  properties:
    answer:
      type: string
      minLength: 1
  required: [answer]
answer_field: answer
gold:
  compare: exact            # exact (normalised text) | numeric (the final number) | choice (a letter A-E)

system_prompt: >-
  You answer questions. Think step by step in "reasoning", then give only the answer in "answer".
  Reply with one JSON object and nothing else.
template: prompt.md
"""

_ANSWER_PROMPT = """\
Question:
{text}

Answer with one JSON object: "reasoning" (your working, briefly) and then "answer" (the answer only).
"""

_TRANSLATE = """\
# __NAME__ (translate): the oracle translates each record into target_language; an empty translation,
# or the source unchanged, goes back to it. Records may carry a reference translation
# (-S +prefilter.field_map.gold=<column>). See README.md for every field.
kind: translate
name: __NAME__
version: __VERSION__
description: >-
  What is translated, into which language, and for whom (shown by `distill filters list`).
source_language: English
target_language: German
bleu_tokenize: 13a          # 13a | intl | char | zh | none (sacrebleu's tokenizers)
gold_min_chrf: 60           # a reference agrees with the oracle from this sentence chrF

system_prompt: >-
  You are a professional translator. Translate faithfully and fluently, keep names, figures and units
  as they are, and add nothing. Reply with one JSON object and nothing else.
template: prompt.md

prefilter:
  min_words: 3
  max_words: 400
"""

_TRANSLATE_PROMPT = """\
Translate this text from {source_language} into {target_language}.

{text}

Answer with one JSON object: {{"translation": "<the text in {target_language}>"}}.
"""

_GENERATE = """\
# __NAME__ (generate): no corpus; the oracle writes `target` items of the template's shape, spread over
# a topic tree of the domain, with exact and near duplicates dropped. `distill templates list` shows the
# templates (simple_qa, reasoning, tool_trace, coding, coding_reasoning) and `distill templates show
# NAME` their schema, prompts and an example. See README.md for every field.
kind: generate
name: __NAME__
version: __VERSION__
description: >-
  What the generated set is for, in one or two sentences (shown by `distill filters list`).
template: simple_qa
domain: >-
  The subject the items cover, as a sentence or two: the oracle expands it into subtopics.
target: 100                 # valid, distinct items to reach
topics:
  depth: 2                  # domain -> breadth subtopics -> breadth each
  breadth: 4
dedup:
  shingle_size: 3           # word shingles of each item's dedup text
  jaccard: 0.6              # above this similarity to a kept item: a near duplicate, dropped
batch: 4                    # items asked per request
stall_rounds: 3             # stop after this many rounds over every topic that add nothing new
student_temperature: 0.8    # the student samples its items (0: greedy)
"""

_README = """\
# __NAME__, __VERSION__

A `__KIND__` task, written by `distill filters new`. Replace this text with what the task is for, who
uses its student, and a few worked examples (a record and the answer you expect).

- `filter.yaml`: the task's fields (each commented). `distill filters show __NAME__` prints what the
  oracle is asked; `distill filters show __NAME__ --schema` the JSON schema every answer must satisfy.
__PROMPT_LINE__- Select it with `-S filter=__NAME__` (`conf/filter/__NAME__.yaml`), e.g.
  `distill config compose filter=__NAME__ && distill config check`, then
  `dvc exp run -S filter=__NAME__ -S prefilter.input=<your corpus>`.

The README's section on `kind: __KIND__` lists the fields, the metrics and a worked command.
"""

KINDS: dict[str, tuple[str, str | None]] = {
    "score": (_SCORE, _SCORE_PROMPT),
    "classify": (_CLASSIFY, _CLASSIFY_PROMPT),
    "extract": (_EXTRACT, _EXTRACT_PROMPT),
    "answer": (_ANSWER, _ANSWER_PROMPT),
    "translate": (_TRANSLATE, _TRANSLATE_PROMPT),
    "generate": (_GENERATE, None),
}


def new_filter(name: str, kind: str, *, version: str = "v1", root: Path = Path("filters"),
               config_dir: Path | None = Path("conf")) -> list[Path]:
    """Write a package of ``kind`` named ``name``; return the files written. Refuses a bad name, an
    unknown kind and any file that exists already, before writing anything."""
    from distill.filterspec import load_filter

    if not NAME.match(name):
        raise ConfigError(f"filter name {name!r}: use lowercase letters, digits and underscores, starting with a "
                          "letter (it names a folder and a Hydra option)")
    if not re.match(r"^v[0-9]+$", version):
        raise ConfigError(f"version {version!r}: use v1, v2, ...")
    if kind not in KINDS:
        raise ConfigError(f"kind {kind!r} is not a task kind; choose one of {', '.join(KINDS)}")
    spec_text, prompt = KINDS[kind]
    folder = Path(root) / name / version
    files = {folder / "filter.yaml": spec_text, folder / "README.md": _README}
    if prompt is not None:
        files[folder / "prompt.md"] = prompt
    if config_dir is not None:
        files[Path(config_dir) / "filter" / f"{name}.yaml"] = (
            f"# -S filter={name} selects the filter in {Path(root).as_posix()}/{name}/{version}/\n"
            f"name: {name}\nversion: {version}\nroot: {Path(root).as_posix()}\n")
    existing = [str(p) for p in files if p.exists()]
    if existing:
        raise ConfigError(f"not overwriting {', '.join(existing)}: choose another name or version, or remove them")
    prompt_line = ("- `prompt.md`: the user message; `{title}`, `{text}` and the kind's fields are filled in per "
                   "record.\n")
    written = []
    for path, text in files.items():
        text = (text.replace("__NAME__", name).replace("__VERSION__", version).replace("__KIND__", kind)
                .replace("__PROMPT_LINE__", prompt_line if prompt is not None else ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    load_filter(folder)  # what was written loads: a template that does not is a bug here, not the user's
    return written
