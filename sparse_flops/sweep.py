"""Sweeps: the members of a study trained, exported and benchmarked by one resumable command.

    python launch.py --mode=sweep --config=experiments/study_fashion_mnist.py --workdir=runs/study

A sweep config is an ordinary experiment config (the base every member starts from) with a
``sweep`` section. ``sweep.families`` maps a family name to its overrides, written as
``key=value`` words; a value with ``|`` alternatives is a grid axis, and a family has one member
per point of its grid per seed of ``sweep.seeds``::

    flops="regularizer.name=flops regularizer.weight=1|2|4|8|16"
    dense="model.activation=none regularizer.name=none model.dim=64|128|1024"

Each member lives in ``<workdir>/<member>/`` (e.g. ``flops-weight4-seed0``): it is trained (resuming
from its checkpoint), exported and benchmarked, then ``member.json`` is written; a member with
that file is skipped, one that was killed resumes from its last checkpoint. Members run seed by
seed, so a sweep stopped part-way (``sweep.time_budget_min``, or a kill) already holds every
family's curve for the first seeds. The re-ranker/baseline member (``sweep.reference``) of a seed
runs first: sparse members of that seed are benchmarked with it as the dense re-ranker of the
two-stage pipeline, and the compact-code baselines (PCA, LSH, PQ, IVF-PQ) are fitted on its
export. Every run ends by collecting each finished member into ``sweep.json``.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import os
import shlex
import time

import ml_collections
from absl import logging

from sparse_flops import io_utils, logs
from sparse_flops.config import as_tuple

MEMBER_FILE = "member.json"
# What a member runs: everything (the study), or training with its validation only (tuning).
STAGES = ("train", "export", "benchmark")
TRAIN_ONLY = ("train",)
SWEEP_FILE = "sweep.json"


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    family: str
    seed: int
    grid: dict  # the family's grid values of this member, by config key
    config: ml_collections.ConfigDict

    @property
    def sparse(self) -> bool:
        return self.config.model.activation != "none"


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_family(spec: str) -> tuple[dict, dict]:
    """``"a.b=1 c.d=x|y"`` -> fixed ``{"a.b": 1}`` and grid ``{"c.d": ["x", "y"]}``."""
    fixed, grid = {}, {}
    for word in shlex.split(spec):
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"sweep family word {word!r} is not key=value (in {spec!r})")
        values = [_parse_value(v) for v in value.split("|")]
        if len(values) > 1:
            grid[key] = values
        else:
            fixed[key] = values[0]
    return fixed, grid


def set_key(config: ml_collections.ConfigDict, key: str, value) -> None:
    """``config.<key> = value`` for an existing dotted key; unknown keys and wrong types raise
    ``ValueError`` naming the key."""
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ValueError(f"sweep override {key}={value!r}: config has no section {part!r}")
        node = node[part]
    if parts[-1] not in node:
        raise ValueError(f"sweep override {key}={value!r}: config has no key {key!r}")
    if isinstance(node[parts[-1]], tuple) and not isinstance(value, tuple):
        value = as_tuple(value, type(node[parts[-1]][0]) if node[parts[-1]] else str)
    try:
        node[parts[-1]] = value
    except TypeError as e:
        raise ValueError(f"sweep override {key}={value!r}: {e}") from e


def _short(key: str, value) -> str:
    v = str(value).replace(" ", "").strip("()").replace(",", "x")
    return f"{key.split('.')[-1]}{v}"


def base_of(sweep_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The member base: the sweep config without its ``sweep`` section."""
    d = sweep_config.to_dict()
    d.pop("sweep")
    return ml_collections.ConfigDict(d)


def members(sweep_config: ml_collections.ConfigDict, *, every: bool = False) -> list[Member]:
    """The members of the sweep (``every``: also those ``sweep.only`` leaves out), seed by seed;
    within a seed the reference member first."""
    sc = sweep_config.sweep
    families = dict(sc.families)
    only = as_tuple(sc.only)
    unknown = set(only) - set(families)
    if unknown:
        raise ValueError(
            f"config.sweep.only names {sorted(unknown)}, not families of this sweep: "
            f"{sorted(families)}"
        )
    seeds = as_tuple(sc.seeds, int)
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"config.sweep.seeds must be non-negative seeds, got {seeds}")
    out = []
    for seed in seeds:
        for family, spec in families.items():
            fixed, grid = parse_family(spec)
            for point in itertools.product(*grid.values()):
                values = dict(zip(grid, point, strict=True))
                config = base_of(sweep_config)
                for key, value in {**fixed, **values}.items():
                    set_key(config, key, value)
                config.seed = seed
                config.lock()
                name = "-".join([family, *(_short(k, v) for k, v in values.items()), f"seed{seed}"])
                out.append(Member(name, family, seed, values, config))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ValueError("two sweep members share a name; give the families distinct names")
    reference = sc.reference
    if reference:
        refs = [m for m in out if _is_reference(m, reference)]
        if not refs:
            raise ValueError(
                f"config.sweep.reference={reference!r} is no member of the sweep (members are "
                f"named like {names[0].rsplit('-seed', 1)[0]!r}, without the seed)"
            )
        if any(m.sparse for m in refs):
            raise ValueError(f"config.sweep.reference={reference!r} must name a dense member")
        out.sort(key=lambda m: (m.seed, not _is_reference(m, reference)))
    if only and not every:
        out = [m for m in out if m.family in only]
    return out


def reference_name(reference: str, seed: int) -> str:
    """The name of ``seed``'s reference member (``config.sweep.reference`` plus the seed)."""
    return f"{reference}-seed{seed}"


def _is_reference(member: Member, reference: str) -> bool:
    """Whether ``member`` is its seed's reference: its name without the seed is ``reference``."""
    return member.name == reference_name(reference, member.seed)


def validate(sweep_config) -> None:
    """Checks the sweep section and every member's config before anything runs."""
    from sparse_flops import config as config_lib

    if "sweep" not in sweep_config:
        raise ValueError(
            "--mode=sweep needs a sweep config with a 'sweep' section, e.g. "
            "--config=experiments/study_fashion_mnist.py"
        )
    if sweep_config.sweep.time_budget_min < 0:
        raise ValueError(
            f"config.sweep.time_budget_min must be >= 0, got {sweep_config.sweep.time_budget_min}"
        )
    stages = as_tuple(sweep_config.sweep.stages)
    if stages not in (STAGES, TRAIN_ONLY):
        raise ValueError(
            f"config.sweep.stages={stages}; use {STAGES} (train, export, benchmark) or "
            f"{TRAIN_ONLY} (a tuning sweep: validation figures only)"
        )
    ms = members(sweep_config)
    if not ms:
        raise ValueError("the sweep has no members (config.sweep.families / only / seeds)")
    for m in ms:
        try:
            config_lib.validate(m.config)
        except ValueError as e:
            raise ValueError(f"sweep member {m.name}: {e}") from e


def _member_settings(member: Member, reference_dir: str | None) -> tuple[list[str], dict]:
    """Workdirs and benchmark settings of one member's benchmark."""
    s = dict(member.config.benchmark)
    methods = set(as_tuple(s["methods"]))
    workdirs = []
    if member.sparse:
        chosen = {"sparse", "two_stage"} & methods
        if reference_dir is not None and "two_stage" in chosen:
            workdirs.append(reference_dir)
            s["rerank_workdir"] = reference_dir
        else:
            chosen.discard("two_stage")
        s["baseline_workdir"] = ""
    elif reference_dir is None:  # this member is the reference: dense plus compact codes
        chosen = {"dense", "pca", "lsh", "pq", "ivfpq"} & methods
    else:
        chosen = {"dense"} & methods
    s["methods"] = tuple(sorted(chosen))
    return workdirs, s


def _config_json(config) -> dict:
    return json.loads(config.to_json_best_effort())


def run_member(
    member: Member,
    workdir: str,
    reference_dir: str | None,
    record_dir: str = "",
    stages: tuple[str, ...] = STAGES,
) -> dict:
    """Trains, exports and benchmarks one member in ``workdir`` (``stages = ("train",)``: trains
    only, the record holds the validation figures); writes its record there (and a copy to
    ``record_dir/<member>.json`` when given) and returns it."""
    from sparse_flops import export, train
    from sparse_flops.bench import timing, tradeoff

    t0 = time.perf_counter()
    validation = train.train_and_evaluate(member.config, workdir)
    t_train = time.perf_counter() - t0
    report = {"rows": [], "environment": timing.environment()}
    if stages == STAGES:
        export.export_workdir(member.config, workdir)
    t_export = time.perf_counter() - t0 - t_train
    if stages == STAGES:
        others, settings = _member_settings(member, reference_dir)
        report = tradeoff.benchmark_workdirs(
            [workdir, *others], workdir, rows_for=(workdir,), **settings
        )
    record = {
        "name": member.name,
        "family": member.family,
        "seed": member.seed,
        "grid": member.grid,
        "sparse": member.sparse,
        "eval_split": member.config.data.eval_split,
        "validation": validation,
        "rows": report["rows"],
        "reference": os.path.basename(reference_dir) if reference_dir else None,
        "seconds": {
            "train": t_train,
            "export": t_export,
            "benchmark": time.perf_counter() - t0 - t_train - t_export,
        },
        "environment": report["environment"],
        "config": _config_json(member.config),
    }
    _write_json(record, os.path.join(workdir, MEMBER_FILE), record_dir, f"{member.name}.json")
    return record


def _write_json(obj: dict, path: str, record_dir: str, record_name: str) -> None:
    """``obj`` as JSON at ``path`` and, when ``record_dir`` is set, at
    ``record_dir/record_name`` (each written atomically)."""
    text = json.dumps(obj, indent=1)
    io_utils.atomic_write_text(path, text)
    if record_dir:
        os.makedirs(record_dir, exist_ok=True)
        io_utils.atomic_write_text(os.path.join(record_dir, record_name), text)


def _compared(config: dict | None, stages: tuple[str, ...]) -> dict | None:
    """The part of a member's config its record depends on: all of it, or for a train-only
    member everything but the export and benchmark sections it never used."""
    if config is None or stages == STAGES:
        return config
    return {k: v for k, v in config.items() if k not in ("export", "benchmark")}


def _known_to(now: dict, record: dict) -> dict:
    """``now`` without the keys the ``record``'s config does not have: keys added to the schema
    after a record was made. A new key's default keeps the behaviour that came before it (the
    schema's rule), so a record made without it is still that member's record."""
    out = {}
    for key, value in now.items():
        if key not in record:
            continue
        if isinstance(value, dict) and isinstance(record[key], dict):
            out[key] = _known_to(value, record[key])
        else:
            out[key] = value
    return out


def read_member(
    workdir: str, member: Member, record_dir: str = "", stages: tuple[str, ...] = STAGES
) -> dict | None:
    """The finished record of ``member``, from ``workdir`` or else ``record_dir``, or None. A
    record whose config differs from the member's (in what ``stages`` use) raises
    ``ValueError``: the sweep changed under a finished member."""
    path = os.path.join(workdir, MEMBER_FILE)
    if not os.path.isfile(path) and record_dir:
        path = os.path.join(record_dir, f"{member.name}.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is unreadable ({e}); delete it to run the member again") from e
    recorded = _compared(record.get("config"), stages)
    now = _compared(_config_json(member.config), stages)
    if recorded is None or recorded != _known_to(now, recorded):
        raise ValueError(
            f"{path} was made with another config than sweep member {member.name} has now; "
            "delete that member's folder to run it again, or sweep into a new --workdir"
        )
    return record


def run(sweep_config, workdir: str) -> dict:
    """Runs every unfinished member (within ``sweep.time_budget_min``), then collects."""
    validate(sweep_config)
    stages = as_tuple(sweep_config.sweep.stages)
    ms = members(sweep_config)
    every = members(sweep_config, every=True) if sweep_config.sweep.only else ms
    sc = sweep_config.sweep
    os.makedirs(workdir, exist_ok=True)
    with io_utils.WorkdirLock(workdir):
        budget_s = 60.0 * sc.time_budget_min
        t_start = time.perf_counter()
        durations: list[float] = []
        rd = sc.record_dir
        todo = [m for m in ms if read_member(os.path.join(workdir, m.name), m, rd, stages) is None]
        logging.info(
            "sweep: %d members, %d finished, %d to run", len(ms), len(ms) - len(todo), len(todo)
        )
        bar = logs.progress(total=len(ms), initial=len(ms) - len(todo), desc="sweep", unit="member")
        for i, m in enumerate(todo):
            elapsed = time.perf_counter() - t_start
            mean = sum(durations) / len(durations) if durations else 0.0
            if budget_s and durations and elapsed + mean > budget_s:
                logging.info(
                    "sweep: time budget of %.0f min reached after %d members; run the same "
                    "command again to continue",
                    sc.time_budget_min,
                    len(durations),
                )
                break
            eta = (
                f"{mean * (len(todo) - i) / 60:.0f} min" if durations else "after the first member"
            )
            logging.info(
                "sweep: member %d/%d %s (ETA of the rest: %s)", i + 1, len(todo), m.name, eta
            )
            bar.set_postfix_str(m.name)
            t0 = time.perf_counter()
            reference_dir = None
            if stages == STAGES and sc.reference and not _is_reference(m, sc.reference):
                reference_dir = _reference_export(every, m.seed, sc, workdir)
            run_member(m, os.path.join(workdir, m.name), reference_dir, rd, stages)
            durations.append(time.perf_counter() - t0)
            bar.update(1)
        bar.close()
        return collect(sweep_config, workdir)


def _reference_export(ms: list[Member], seed: int, sc, workdir: str) -> str | None:
    """The workdir of ``seed``'s reference member with its export, re-made when only its record
    survives (a new work tree); None when the sweep runs without that member."""
    from sparse_flops import codes, export, train

    ref = [m for m in ms if _is_reference(m, sc.reference) and m.seed == seed]
    if not ref:
        return None
    path = os.path.join(workdir, ref[0].name)
    if not os.path.isdir(os.path.join(path, codes.CODES_DIR)):
        logging.info("sweep: re-making the export of reference member %s", ref[0].name)
        train.train_and_evaluate(ref[0].config, path)
        export.export_workdir(ref[0].config, path)
    return path


def collect(sweep_config, workdir: str) -> dict:
    """Gathers every finished member of the sweep into ``<workdir>/sweep.json``."""
    stages = as_tuple(sweep_config.sweep.stages)
    records, missing = [], []
    for m in members(sweep_config):
        record = read_member(
            os.path.join(workdir, m.name), m, sweep_config.sweep.record_dir, stages
        )
        if record is None:
            missing.append(m.name)
        else:
            records.append(record)
    out = {
        "workdir": os.path.basename(os.path.normpath(workdir)),
        "families": dict(sweep_config.sweep.families),
        "seeds": list(as_tuple(sweep_config.sweep.seeds, int)),
        "reference": sweep_config.sweep.reference,
        "members": records,
        "missing": missing,
    }
    _write_json(out, os.path.join(workdir, SWEEP_FILE), sweep_config.sweep.record_dir, SWEEP_FILE)
    logging.info("sweep: %d members collected, %d unfinished", len(records), len(missing))
    return out
