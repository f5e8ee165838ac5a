"""Every config key: its type, its range or choices, checked in one place as a recipe loads.

Each group is a dataclass below, one field per key; `Annotated[..., Range(...)]` bounds a number,
`Literal[...]` lists the choices. `check(cfg, base)` walks the composed config against them and the
cross-key rules at the end, and stops at the first bad value with one message naming the key, the
value and what is allowed. The stage checks (`check_route`, `check_grow`, ...) say what one stage
needs beyond that. Checks that need more than the config (a file, a model, the machine) stay with
the code that has them.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass, fields, is_dataclass
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from distill.errors import ConfigError

# choices, used by the schema and by the code that acts on them
TASK_KINDS = ("classification", "multilabel", "ner")
STUDENT_KINDS = ("seq2seq", "causal", "encoder")
METHODS = ("lora", "qlora", "full")
MODES = ("json_schema", "json_object", "text")  # the teacher's JSON answers, in fallback order
OUTPUTS = (*MODES, "choice")  # choice: the bare label as plain text (tasks with choice_answers)
PROMPTS = ("full", "compact")
NOISE = ("uniform", "realistic")
BALANCE = ("auto", "none", "weighted", "oversample")
CALIBRATION = ("agreement", "teacher_confidence")
CLEAN = ("confidence", "cleanlab")
ROUTES = ("teacher", "review")
ROUTING = ("threshold", "route_fraction", "route_budget_usd")  # what picks the routed rows: one at most
TARGET_METRICS = ("main", "macro_f1", "worst_recall")
STRATEGIES = ("replace", "accumulate", "anchor")
DISAGREEMENTS = ("drop", "relabel")
FORMATS = ("conll", "csv", "json", "parquet", "tsv")
SPLITS = ("seed", "corpus", "gold", "author_pool")  # author_pool: the simulated author's texts (distill grow)


@dataclass(frozen=True)
class Range:
    """A number's bounds; `what` says them in words instead."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    what: str | None = None

    def holds(self, v) -> bool:
        return ((self.lo is None or (v > self.lo if self.lo_open else v >= self.lo))
                and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)))

    def __str__(self) -> str:
        if self.what:
            return self.what
        if self.hi is None:
            return f"{'above' if self.lo_open else 'at least'} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def at_least(lo, what=None):
    return Range(lo, what=what)


SHARE = Range(0, 1)
Share = Annotated[float, SHARE]
Count = Annotated[int, at_least(0)]
Positive = Annotated[int, at_least(1)]
NonNegative = Annotated[float, at_least(0)]


# -- the groups -----------------------------------------------------------------------------------
@dataclass
class Backoff:
    base: NonNegative
    max: NonNegative


@dataclass
class Price:
    input: NonNegative
    output: NonNegative


@dataclass
class Sim:
    accuracy: Optional[Share]
    noise: Literal[NOISE]
    auroc: Share
    hardness: NonNegative
    confusions: dict
    confusion_share: Share
    ner_errors: dict
    author_off_topic: Share
    seed: int
    port: Annotated[int, Range(0, 65535)]
    latency: NonNegative
    rate_limit: Optional[Annotated[float, Range(0, lo_open=True)]]
    error_rate: Share
    drop_rate: Share
    malformed_rate: Share
    output_modes: list[Literal[MODES]]
    key_faults: dict
    batch_seconds: NonNegative


@dataclass
class Teacher:
    model: str
    base_url: Optional[str]
    api_key_env: Union[str, list[str], None]
    simulated: bool
    mode: Literal["online", "batch"]
    output: Literal[OUTPUTS]
    prompt: Literal[PROMPTS]
    logprobs: bool
    top_logprobs: Optional[Annotated[int, Range(0, 20)]]
    samples: Positive
    sample_temperature: NonNegative
    temperature: NonNegative
    max_tokens: Positive
    concurrency: Positive
    rpm: Optional[Annotated[float, Range(0, lo_open=True)]]
    tpm: Optional[Annotated[float, Range(0, lo_open=True)]]
    timeout: Annotated[float, Range(0, lo_open=True)]
    max_retries: Count
    backoff: Backoff
    reask: Count
    cache: Optional[str]
    price: Optional[Price]
    batch_discount: Annotated[float, Range(0, 1, lo_open=True)]
    budget_usd: Optional[NonNegative]
    dry_run: bool
    batch_poll_s: NonNegative
    sim: Sim


@dataclass
class Tiny:
    hidden: Positive
    layers: Positive
    heads: Positive


@dataclass
class Lora:
    r: Positive
    alpha: Annotated[float, Range(0, lo_open=True)]
    dropout: Annotated[float, Range(0, 1, hi_open=True)]
    target_modules: Union[list[str], str]


@dataclass
class Student:
    kind: Literal[STUDENT_KINDS]
    model: Optional[str]
    tiny: Optional[Tiny]
    method: Literal[METHODS]
    merge: bool
    lora: Lora
    case_marker: Optional[str]
    bidirectional: bool
    pooling: Literal["auto", "model"]
    max_source_length: Positive
    max_target_length: Count


@dataclass
class Clean:
    method: Optional[Literal[("none", *CLEAN)]]
    min_confidence: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]
    folds: Annotated[int, at_least(2)]


@dataclass
class Train:
    epochs: Positive
    max_steps: Annotated[int, at_least(-1, "-1 (train for epochs) or a number of steps")]
    min_steps: Count
    lr: NonNegative  # 0 freezes the weights (a check, a baseline)
    head_lr: Optional[NonNegative]
    head_init: Literal["random", "probe"]
    batch_size: Positive
    grad_accum: Positive
    weight_decay: NonNegative
    warmup: NonNegative
    scheduler: str
    logging_steps: Positive
    rows: Optional[str]
    dev_fraction: Annotated[float, Range(0, 1, hi_open=True)]
    early_stopping_patience: Optional[Positive]
    save_steps: Positive
    save_total_limit: Optional[Positive]
    rationale_alpha: Share
    report_to: Union[list[str], str]
    push_to_hub: bool
    hub_model_id: Optional[str]
    seed: int
    class_balance: Literal[BALANCE]
    calibration: Literal[CALIBRATION]
    clean: Clean


@dataclass
class Cusum:
    k: NonNegative
    h: Annotated[float, Range(0, lo_open=True)]


@dataclass
class Monitor:
    score_teacher: bool
    baseline: str  # auto | previous | teacher | none | a run directory (checked when read)
    alpha: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]
    fail_on: Literal["warning", "critical", "never"]
    min_support: Count
    critical_drop: Share
    collapse_f1: Share
    collapse_from: Share
    material_ratio: Annotated[float, at_least(1)]
    material_psi: NonNegative
    material_cardinality: NonNegative
    n_boot: Count
    n_perm: Count
    embed_rows: Count
    cusum: Cusum
    power: bool
    assumed_discordance: Share
    history: Optional[str]
    seed: int


@dataclass
class Label:
    batch_size: Annotated[int, at_least(1, "a positive row count")]
    batch_tokens: Optional[Annotated[int, at_least(1, "a positive token count or null")]]
    window: Annotated[int, at_least(1, "a positive row count")]
    splits: list[Literal["corpus", "gold"]]
    threshold: Union[Share, Literal["auto"], None]
    route: Literal[ROUTES]
    target: Share
    target_metric: Literal[TARGET_METRICS]
    route_fraction: Optional[Annotated[float, Range(0, 1, what="a share of the corpus rows in [0, 1]")]]
    route_budget_usd: Optional[Annotated[float, at_least(0, "a USD amount >= 0")]]
    audit_fraction: Share
    audit_max_rows: Count
    audit_seed: int


@dataclass
class Refine:
    rounds: Positive
    fraction: Annotated[float, Range(0, 1, lo_open=True, what="a share of the corpus rows in (0, 1]")]
    explore: Share
    min_gain: float


@dataclass
class Grow:
    rounds: Positive
    texts: Positive
    requests: Positive
    lengths: list[str]
    styles: list[str]
    disagreements: Literal[DISAGREEMENTS]
    top: Positive
    depth: Positive
    explore: Count
    next_labels: Count
    min_gain: float
    dev_fraction: Annotated[float, Range(0, 1, hi_open=True)]


@dataclass
class Audit:
    generations: Annotated[int, at_least(1, "at least 1 (generations after generation 0)")]
    strategies: Union[Literal[STRATEGIES], list[Literal[STRATEGIES]]]
    anchor_fraction: Annotated[float, Range(0, 1, lo_open=True, what="a share of the seed rows in (0, 1]")]


@dataclass
class Task:
    kind: Literal[TASK_KINDS]
    rationale: bool
    labels: list[str]
    aliases: Optional[dict]
    guidelines: Optional[str]
    examples: Optional[list]
    shortlist: Optional[Annotated[int, at_least(1, "a number of labels")]]
    shortlist_target: Annotated[float, Range(0, 1, lo_open=True)]
    max_edit_distance: Count


Rows = Annotated[int, at_least(1, "a positive number of rows")]


@dataclass
class Split:
    path: Optional[str]
    format: Optional[Literal[FORMATS]]
    text_column: str
    tokens_column: str
    label_column: Optional[str]
    id_column: Optional[str]
    limit: Optional[Annotated[int, at_least(1, "a positive number of rows or null")]]
    slice: Optional[list[float]]
    column_names: Optional[list[str]]
    token_index: int
    tag_index: int
    max_chars: Positive


@dataclass
class Sizes:
    seed: Rows
    corpus: Rows
    gold: Rows
    author_pool: Rows


@dataclass
class Demo:
    name: Optional[str]
    dir: Optional[str]
    sizes: Sizes


@dataclass
class Data:
    drop_gold_overlap: bool
    demo: Optional[Demo]
    seed: Split
    corpus: Split
    gold: Split
    author_pool: Split


@dataclass
class Config:
    recipe: str
    run_dir: str
    seed: int
    task: Task
    data: Annotated[Data, "open"]  # a recipe may add its own keys (data.dir, data.file) to interpolate
    teacher: Teacher
    student: Student
    train: Train
    monitor: Monitor
    label: Label
    audit: Audit
    grow: Grow
    refine: Refine


# -- checking -------------------------------------------------------------------------------------
def check(cfg: DictConfig, base: DictConfig | None = None) -> None:
    """Stop at the first key whose value the schema does not allow, then at the first broken rule."""
    _walk(Config, cfg, "", base)
    for rule in RULES:
        rule(cfg)


@functools.cache
def _hints(schema) -> dict:
    return get_type_hints(schema, include_extras=True)


def _walk(schema, node, prefix: str, base, open_keys: bool = False) -> None:
    hints = _hints(schema)
    known = set(hints)
    for key in node:
        path = f"{prefix}{key}"
        if key not in known:
            if open_keys:
                continue
            valid = [f"{prefix}{k}" for k in sorted(known)]
            hint = did_you_mean(path, valid)
            raise ConfigError(f"unknown config key {path!r} in recipe; valid keys: {', '.join(valid)}"
                              + (f";{hint}" if hint else ""))
        _value(hints[key], node[key], path, base)


def did_you_mean(key: str, valid: list[str]) -> str:
    """' did you mean 'x'?' for the valid key closest to a misspelt one, or ''."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.7)  # below, the guesses mislead
    return f" did you mean {close[0]!r}?" if close else ""


def _value(kind, value, path: str, base) -> None:
    extras = ()
    if get_origin(kind) is Annotated:
        kind, *extras = get_args(kind)
    branches = list(get_args(kind)) if get_origin(kind) is Union else [kind]
    for branch in branches:
        inner, bounds = branch, [e for e in extras if isinstance(e, Range)]
        if get_origin(inner) is Annotated:
            inner, *more = get_args(inner)
            bounds += [e for e in more if isinstance(e, Range)]
        if is_dataclass(inner) and isinstance(value, DictConfig):
            return _walk(inner, value, path + ".", base, open_keys="open" in extras)
        if not _is(inner, value):
            continue
        for r in bounds:
            if not r.holds(value):
                shown = float(value) if inner is float else value
                raise ConfigError(f"{path} must be {r}, not {shown}")
        if get_origin(inner) is list:
            for i, item in enumerate(value):
                _value(get_args(inner)[0], item, f"{path}[{i}]", base)
        return
    old = OmegaConf.select(base, path) if base is not None else None
    had = f" (the recipe has {old!r})" if old is not None and old != value and _is(kind, old) else ""
    said = [_say(b, detail=len(branches) > 1) for b in branches]
    what = f"{', '.join(said[:-1])} or {said[-1]}" if len(said) > 1 else said[0]
    raise ConfigError(f"{path} must be {what}{had}, not {_shown(value)}")


def _is(kind, value) -> bool:
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if kind is dict:
        return isinstance(value, (dict, DictConfig))
    if kind is list or get_origin(kind) is list:
        return isinstance(value, (list, tuple, ListConfig))
    if get_origin(kind) is Literal:
        return isinstance(value, str) and value in get_args(kind)
    if get_origin(kind) is Annotated:
        return _is(get_args(kind)[0], value)
    return False


def _say(kind, detail: bool = False) -> str:
    bounds = ""
    if get_origin(kind) is Annotated:
        kind, *extras = get_args(kind)
        bounds = "".join(f" {r}" for r in extras if isinstance(r, Range) and detail and not r.what)
    if kind is type(None):
        return "null"
    if get_origin(kind) is Literal:
        choices = list(get_args(kind))
        return f"'{choices[0]}'" if detail and len(choices) == 1 else f"one of {choices}"
    if get_origin(kind) is list:
        item = get_args(kind)[0]
        return (f"a list of values from {list(get_args(item))}" if get_origin(item) is Literal
                else f"a list of {_say(item)}s")
    if is_dataclass(kind):
        return f"a mapping of {', '.join(f.name for f in fields(kind))}"
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a mapping"}
    return words.get(kind, getattr(kind, "__name__", str(kind))) + bounds


def _shown(value):
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else repr(value)


# -- rules across keys ----------------------------------------------------------------------------
def _one_way_to_route(cfg) -> None:
    given = [k for k in ROUTING if cfg.get("label") is not None and cfg.label.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of label.threshold, label.route_fraction and label.route_budget_usd, "
                          f"not {' and '.join('label.' + k for k in given)}")


def _slices(cfg) -> None:
    for split in SPLITS:
        spec = OmegaConf.select(cfg, f"data.{split}")
        if spec is not None and spec.get("slice") is not None:
            bounds = list(spec.slice)
            if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1] <= 1:
                raise ConfigError(f"data.{split}.slice must be [lo, hi] with 0 <= lo < hi <= 1, got {list(spec.slice)}")


def _task_fits(cfg) -> None:
    """What the task kind allows: shortlists, cleaning methods, rationales, bare-label answers."""
    if cfg.get("task") is None:
        return
    from distill.tasks import build_task

    task = build_task(cfg.task)
    k = cfg.task.get("shortlist")
    if k is not None:
        if not task.shortlists:
            raise ConfigError(f"task.shortlist applies to tasks with one label per text, not {task.kind}")
    method = OmegaConf.select(cfg, "train.clean.method")
    if method not in (None, "none") and method not in task.clean_methods:
        raise ConfigError(f"train.clean.method={method} cleans single-label classification labels; for "
                          f"{task.kind} use train.clean.method={' or '.join(task.clean_methods)}")
    if task.rationale and cfg.get("student") is not None:
        from distill.students import student_class

        if not student_class(cfg.student).generative:
            raise ConfigError(f"task.rationale needs a seq2seq or causal student; {cfg.student.kind} students "
                              "predict classes and cannot learn to write a rationale")
    if cfg.get("teacher") is not None:
        check_teacher(cfg.teacher, task)


def check_teacher(teacher, task, price=None) -> None:
    """What the teacher is asked for fits the question (`task`: the task, or a request kind of
    grow's), and a budget has a price to count against. The engine checks each request kind too."""
    if teacher.get("output") == "choice" and (not task.choice_answers or task.rationale):
        why = "a rationale" if task.choice_answers else f"{task.kind} answers"
        raise ConfigError(f"teacher.output=choice asks for a bare label, but {why} need JSON: "
                          f"set teacher.output to one of {list(MODES)}")
    if teacher.get("budget_usd") is not None:
        from distill.config import config_file
        from distill.teacher.client import prices

        if (price or prices(teacher.get("model"), teacher.get("price"))) is None:
            raise ConfigError(f"teacher.budget_usd is set but model {teacher.get('model')!r} has no price: add it to "
                              f"{config_file('prices.yaml')} or set teacher.price={{input: .., output: ..}}")


def _qlora(cfg) -> None:
    if OmegaConf.select(cfg, "student.method") == "qlora" and cfg.student.get("tiny"):
        raise ConfigError("student.method=qlora quantizes pretrained weights: set student.model to a hub id or "
                          "a local directory, not a tiny random model")


def _strategies(cfg) -> None:
    if cfg.get("audit") is None:
        return
    chosen = strategies(cfg)
    if not chosen or len(set(chosen)) < len(chosen):
        raise ConfigError(f"audit.strategies={chosen}: choose one or more distinct of {', '.join(STRATEGIES)}")


def _grow_lists(cfg) -> None:
    if cfg.get("grow") is not None and (not list(cfg.grow.lengths) or not list(cfg.grow.styles)):
        raise ConfigError("grow.lengths and grow.styles each need at least one entry")


RULES = (_one_way_to_route, _slices, _task_fits, _qlora, _strategies, _grow_lists)


def strategies(cfg) -> list[str]:
    s = cfg.audit.strategies
    return [s] if isinstance(s, str) else list(s)


# -- what one stage needs beyond the schema --------------------------------------------------------
def one_process(stage: str, why: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"distill {stage} runs in one process ({why}); run it without accelerate launch")


def needs_group(cfg, group: str) -> None:
    if cfg.get(group) is None:
        raise ConfigError(f"recipe {cfg.recipe!r} has no {group} settings: add `- {group}: default` to its defaults")


def check_labels(cfg, split: str, instead: str = "") -> None:
    """A simulated teacher answers a row from its label (data.{split}.label_column; loading the split
    checks that no row lacks one): without them every row sent would come back empty, so say so
    before anything is read or sent. `instead`: another way out, as the caller knows it."""
    if cfg.teacher.simulated and not cfg.data[split].get("label_column"):
        raise ConfigError(
            f"teacher=simulated answers each row from its label, and data.{split} has no label column, so "
            f"every {split} row sent would come back without an answer: set data.{split}.label_column=COLUMN "
            f"(the column of {cfg.data[split].get('path')} that holds each row's label), {instead or 'or '}"
            "use a real teacher")


def check_grow(cfg, task) -> None:
    one_process("grow", "each round trains on one device")
    needs_group(cfg, "grow")
    if not task.grows:
        raise ConfigError(f"distill grow builds data for tasks with one label per text, not {task.kind}")
    if cfg.teacher.mode == "batch":
        raise ConfigError("distill grow asks the teacher online, round by round: set teacher.mode=online")


def check_audit(cfg) -> None:
    one_process("audit", "each generation trains on one device")
    needs_group(cfg, "audit")


def check_shortlist(task) -> None:
    if not task.shortlists:
        raise ConfigError(f"distill shortlist applies to tasks with one label per text, not {task.kind}")


def needs_routing(cfg, needed: bool) -> None:
    if not needed:
        raise ConfigError("distill route needs label.threshold (a confidence in [0, 1], or auto to use the one "
                          f"`distill cascade recipe={cfg.recipe}` picked on gold), label.route_fraction, "
                          "label.route_budget_usd, or label.audit_fraction above 0")
