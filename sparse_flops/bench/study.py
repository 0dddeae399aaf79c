"""The study's report: ``docs/results.md`` and its plots, written from a sweep's ``sweep.json``
(no number typed by hand).

    python -m sparse_flops.bench.study --sweep=results/study_fashion_mnist/sweep.json \\
        --sweep=results/open_set_fashion_mnist/sweep.json --out=docs/results.md
    python -m sparse_flops.bench.study --sweep=results/tune_fashion_mnist/sweep.json \\
        --out=docs/tuning.md      # a tuning sweep (train only): its validation table


Every point is a (method, setting) averaged over the seeds that finished it, with its min and
max. Curves: the sparse index over each regulariser's weights (FLOPs, L1), the unregularised
ReLU head, exact dense search over the dense models' dimensions, PCA / LSH / PQ / IVF-PQ over
their parameters (fitted on the reference dense model), and the two-stage pipeline (FLOPs
candidates re-ranked by the reference dense model) over weights and candidate counts. Methods
are compared at equal cost: the best accuracy each reaches within a budget of ms/query (or of
multiply-adds), read off its points, never one point against one point.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from sparse_flops import io_utils
from sparse_flops.bench.regimes import REGIMES
from sparse_flops.bench.report import accuracy_key, markdown_table
from sparse_flops.sweep import reference_name

# Curve name -> how its rows are picked: (member family, or None for any; row method prefix).
CURVES = {
    "FLOPs": ("flops", "sparse index (ours)"),
    "L1": ("l1", "sparse index (ours)"),
    "ReLU, no penalty": ("relu", "sparse index (ours)"),
    "dense exact": ("dense", "dense exact (BLAS)"),
    "PCA": (None, "PCA + exact"),
    "LSH": (None, "LSH (Hamming)"),
    "PQ": (None, "PQ (faiss)"),
    "IVF-PQ": (None, "IVF-PQ (faiss)"),
    "two-stage FLOPs": ("flops", "two-stage"),
    # The open-set sweep's class-trained models, beside its instance-trained (NT-Xent) ones.
    "FLOPs, class-trained": ("cls_flops", "sparse index (ours)"),
    "dense exact, class-trained": ("cls_dense", "dense exact (BLAS)"),
}
COSTS = {"ms": "ms_per_query_1t", "MACs": "macs_per_query"}


def _point_key(member: dict, row: dict) -> str:
    grid = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in member["grid"].items())
    setting = row["setting"].split(", re-rank")[0]
    return "; ".join(x for x in (grid, setting) if x)


def curve_points(sweep: dict, regime: str) -> dict[str, list[dict]]:
    """``{curve: [point]}``: each point one (grid value, setting) with the number of seeds, its
    accuracy's mean, min and max over seeds, and its costs' median, min and max over seeds (a
    median: a run slowed throughout by a loaded shared machine must not move a timing)."""
    acc_key = accuracy_key(regime)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for member in sweep["members"]:
        for row in member["rows"]:
            if row["regime"] != regime:
                continue
            for curve, (family, prefix) in CURVES.items():
                if (family is None or member["family"] == family) and row["method"].startswith(
                    prefix
                ):
                    groups[(curve, _point_key(member, row))].append(
                        {
                            "acc": row[acc_key],
                            "ms": row[COSTS["ms"]],
                            "MACs": row[COSTS["MACs"]],
                            "seed": member["seed"],
                        }
                    )
    out: dict[str, list[dict]] = defaultdict(list)
    for (curve, key), vals in groups.items():
        point = {"curve": curve, "setting": key, "seeds": len({v["seed"] for v in vals})}
        for field in ("acc", "ms", "MACs"):
            x = np.array([v[field] for v in vals], float)
            point[field], point[field + "_min"], point[field + "_max"] = (
                float(x.mean() if field == "acc" else np.median(x)),
                float(x.min()),
                float(x.max()),
            )
        out[curve].append(point)
    return dict(out)


def pareto(points: list[dict], cost: str) -> list[dict]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    front, best = [], -np.inf
    for p in sorted(points, key=lambda p: (p[cost], -p["acc"])):
        if p["acc"] > best:
            front.append(p)
            best = p["acc"]
    return front


def best_within(points: list[dict], cost: str, budget: float) -> dict | None:
    """The most accurate point costing at most ``budget`` (None if none does)."""
    ok = [p for p in points if p[cost] <= budget]
    return max(ok, key=lambda p: p["acc"]) if ok else None


def _verdict(p: dict, q: dict) -> str:
    """``above``/``below`` when ``p``'s seed range lies wholly above/below ``q``'s; ``level``
    when the two ranges overlap (the difference is within the spread over seeds)."""
    if p["acc_min"] > q["acc_max"]:
        return "above"
    if p["acc_max"] < q["acc_min"]:
        return "below"
    return "level"


def equal_cost_comparison(curves: dict, a: str, b: str, cost: str) -> list[dict]:
    """At each of ``a``'s Pareto points' costs: ``a``'s point, ``b``'s best point within that
    budget (None if ``b`` has none so cheap), their difference and its verdict."""
    if a not in curves or b not in curves:
        return []
    out = []
    for p in pareto(curves[a], cost):
        q = best_within(curves[b], cost, p[cost])
        out.append(
            {
                "budget": p[cost],
                "a": p,
                "b": q,
                "diff": None if q is None else p["acc"] - q["acc"],
                "verdict": "no point" if q is None else _verdict(p, q),
            }
        )
    return out


def equal_cost_lines(curves: dict, a: str, b: str, cost: str, unit: str) -> list[str]:
    """Statements comparing curves ``a`` and ``b`` at each of ``a``'s Pareto points' costs."""
    lines = []
    for c in equal_cost_comparison(curves, a, b, cost):
        p, q = c["a"], c["b"]
        budget = _num(c["budget"]) + f" {unit}"
        if q is None:
            lines.append(f"- at {budget}: {a} {p['acc']:.3f}; {b} has no point this cheap")
            continue
        word = {"above": "above", "below": "below", "level": "level within the seeds' spread"}
        lines.append(
            f"- at {budget}: {a} {p['acc']:.3f} ({p['setting']}), {b} {q['acc']:.3f} "
            f"({q['setting']}): {a} is {abs(c['diff']):.3f} {word[c['verdict']]}"
        )
    return lines


def plain_statement(curves: dict, a: str, b: str, cost: str, unit: str) -> str | None:
    """One sentence summing up :func:`equal_cost_comparison`: where ``b`` has no point as
    cheap, and over the budgets where both have one, how often and by how much ``a`` is above,
    below or level with ``b`` (level: the seed ranges overlap)."""
    comp = equal_cost_comparison(curves, a, b, cost)
    if not comp:
        return None
    parts = []
    none = [c["budget"] for c in comp if c["b"] is None]
    if none:
        where = _num(none[0]) if len(none) == 1 else f"{_num(min(none))} to {_num(max(none))}"
        parts.append(f"{b} has no point as cheap as {a} at {where} {unit}")
    both = [c for c in comp if c["b"] is not None]
    if both:
        lo, hi = min(c["budget"] for c in both), max(c["budget"] for c in both)
        span = f"{_num(lo)} {unit}" if lo == hi else f"{_num(lo)} to {_num(hi)} {unit}"
        counts = []
        for verdict in ("above", "below", "level"):
            group = [c for c in both if c["verdict"] == verdict]
            if not group:
                continue
            if verdict == "level":
                counts.append(f"level within the seeds' spread at {len(group)}")
            else:
                sizes = [abs(c["diff"]) for c in group]
                by = (
                    f"{min(sizes):.3f}"
                    if len(sizes) == 1
                    else (f"{min(sizes):.3f} to {max(sizes):.3f}")
                )
                counts.append(f"{verdict} at {len(group)} (by {by})")
        parts.append(
            f"at the {len(both)} budget{'s' if len(both) > 1 else ''} where both have a point "
            f"({span}), {a} is " + ", ".join(counts)
        )
    return f"{a} against {b} at equal {unit}: " + "; ".join(parts) + "."


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def speedup_at_equal_accuracy(curves: dict, exact: str = "dense exact") -> list[str]:
    """For the most accurate exact dense point: the cheapest point of each other curve at the
    same (or higher) mean accuracy, and its speed-up."""
    if exact not in curves:
        return []
    ref = max(curves[exact], key=lambda p: p["acc"])
    lines = [
        f"Reference: exact dense search, {ref['setting']}: accuracy {ref['acc']:.3f} at "
        f"{ref['ms']:.3g} ms/query."
    ]
    for curve, points in curves.items():
        if curve == exact:
            continue
        ok = [p for p in points if p["acc"] >= ref["acc"]]
        if ok:
            p = min(ok, key=lambda p: p["ms"])
            lines.append(
                f"- {curve}: {p['acc']:.3f} at {p['ms']:.3g} ms/query ({p['setting']}), "
                f"{ref['ms'] / p['ms']:.2f}x the speed of exact dense search"
            )
        else:
            p = max(points, key=lambda p: p["acc"])
            lines.append(
                f"- {curve}: never reaches it; its best is {p['acc']:.3f} at {p['ms']:.3g} "
                f"ms/query ({p['setting']})"
            )
    return lines


def validation_table(sweep: dict) -> list[dict]:
    """Per sparse family and weight: validation precision@1, mean non-zeros, ``sum p^2`` and
    ``R_sub`` (mean over seeds, from each member's training-time evaluation)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for m in sweep["members"]:
        if m["sparse"]:
            groups[(m["family"], json.dumps(m["grid"]))].append(m["validation"])
    rows = []
    for (family, grid), vals in sorted(groups.items()):
        row = {
            "family": family,
            "setting": ", ".join(f"{k}={v}" for k, v in json.loads(grid).items()),
        }
        row["seeds"] = len(vals)
        for key in ("precision@1", "map", "mean_nonzeros", "sum_p_squared", "r_sub"):
            x = np.array([v[key] for v in vals], float)
            row[key] = float(x.mean())
            row[key + " (min-max)"] = f"{x.min():.3g}-{x.max():.3g}"
            if key == "precision@1":
                row["acc_min"], row["acc_max"] = float(x.min()), float(x.max())
        rows.append(row)
    return rows


def _shown(val_rows: list[dict]) -> list[str]:
    """The validation table's columns (the numeric seed range is shown as text already)."""
    return [c for c in (val_rows[0] if val_rows else {}) if c not in ("acc_min", "acc_max")]


def chosen_weight(val_rows: list[dict], family: str, tolerance: float = 0.01) -> dict | None:
    """The validation choice of a family's weight: the sparsest member (fewest mean non-zeros)
    whose validation precision@1 is within ``tolerance`` of the family's best."""
    rows = [r for r in val_rows if r["family"] == family]
    if not rows:
        return None
    best = max(r["precision@1"] for r in rows)
    ok = [r for r in rows if r["precision@1"] >= best - tolerance]
    return min(ok, key=lambda r: r["mean_nonzeros"])


def plot(curves_by_regime: dict, val_rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(curves_by_regime)
    fig, axes = plt.subplots(len(regimes) + 1, 2, figsize=(13, 4.6 * (len(regimes) + 1)))
    axes = np.atleast_2d(axes)
    for r, regime in enumerate(regimes):
        for c, cost in enumerate(COSTS):
            ax = axes[r, c]
            for curve, points in sorted(curves_by_regime[regime].items()):
                pts = sorted(points, key=lambda p: p[cost])
                x = np.array([p[cost] for p in pts])
                y = np.array([p["acc"] for p in pts])
                err = np.array(
                    [[p["acc"] - p["acc_min"] for p in pts], [p["acc_max"] - p["acc"] for p in pts]]
                )
                line = ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=2, alpha=0.6, label=curve)
                front = pareto(points, cost)
                ax.plot(
                    [p[cost] for p in front],
                    [p["acc"] for p in front],
                    "-",
                    color=line[0].get_color(),
                )
            ax.set_xscale("log")
            ax.set_xlabel("ms per query (1 thread)" if cost == "ms" else "multiply-adds per query")
            ax.set_ylabel(accuracy_key(regime))
            ax.set_title(f"{regime} retrieval (lines: each method's Pareto front)")
            ax.grid(alpha=0.3)
        axes[r, 0].legend(fontsize=7)
    for c, key in enumerate(("r_sub", "sum_p_squared")):
        ax = axes[-1, c]
        for family in sorted({v["family"] for v in val_rows}):
            rows = sorted(
                [v for v in val_rows if v["family"] == family], key=lambda v: v["mean_nonzeros"]
            )
            ax.plot([v["mean_nonzeros"] for v in rows], [v[key] for v in rows], "o-", label=family)
        ax.set_xscale("log")
        if key == "sum_p_squared":
            ax.set_yscale("log")
        ax.set_xlabel("mean non-zeros per code (validation)")
        ax.set_ylabel("R_sub" if key == "r_sub" else "sum_j p_j^2")
        ax.set_title("the paper's Figure 4 b/d: " + ("R_sub" if key == "r_sub" else "sum p^2"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()

    def save(tmp):
        fig.savefig(tmp, dpi=90, format="png")

    io_utils.atomic_write(path, save)
    plt.close(fig)


def plot_validation(val_rows: list[dict], path: str) -> None:
    """Validation precision@1 against mean non-zeros and against ``sum_j p_j^2`` (the expected
    multiply-adds per query over the database size), one line per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for ax, key, label in (
        (axes[0], "mean_nonzeros", "mean non-zeros per code"),
        (axes[1], "sum_p_squared", "sum_j p_j^2 (multiply-adds per query / items)"),
    ):
        for family in sorted({v["family"] for v in val_rows}):
            rows = sorted([v for v in val_rows if v["family"] == family], key=lambda v: v[key])
            ax.plot([v[key] for v in rows], [v["precision@1"] for v in rows], "o-", label=family)
        ax.set_xscale("log")
        ax.set_xlabel(label + " (validation)")
        ax.set_ylabel("precision@1 (validation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    io_utils.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def write_tuning(sweep: dict, sweep_path: str, out_path: str, commands: Sequence[str]) -> str:
    """The report of a tuning sweep (members trained and evaluated on validation only): each
    family's validation table, its plot and its validation choice."""
    val_rows = validation_table(sweep)
    png = os.path.splitext(out_path)[0] + ".png"
    plot_validation(val_rows, png)
    lines = [
        "# Tuning on the validation split",
        "",
        "Written by `python -m sparse_flops.bench.study` from the tuning sweep's records; no "
        "figure is typed by hand and none comes from the test split. Reproduce with:",
        "",
        "```",
        *commands,
        f"python -m sparse_flops.bench.study --sweep={sweep_path} --out={out_path}",
        "```",
        "",
        f"Members finished: {len(sweep['members'])}; not yet run: {len(sweep['missing'])}.",
        "",
        f"![validation precision@1 against sparsity]({os.path.basename(png)})",
        "",
        markdown_table(val_rows, _shown(val_rows)),
        "",
    ]
    families = sorted({r["family"] for r in val_rows})
    for family in families:
        c = chosen_weight(val_rows, family)
        lines.append(
            f"- {family}: the sparsest setting within 0.01 precision@1 of the family's best is "
            f"{c['setting']} ({c['precision@1']:.3f} at {c['mean_nonzeros']:.1f} non-zeros, "
            f"sum p^2 {c['sum_p_squared']:.3g})."
        )
    for f in families:
        for g in families:
            if f != g:
                lines += dominance_lines(val_rows, f, g)
    text = "\n".join(lines) + "\n"
    io_utils.atomic_write_text(out_path, text)
    return text


def dominance_lines(val_rows: list[dict], a: str, b: str, cost: str = "sum_p_squared") -> list[str]:
    """For each of family ``b``'s settings, the most accurate setting of ``a`` that is at least
    as cheap (``cost``: expected multiply-adds per query over the items, by default), and by how
    much its mean validation precision@1 is higher or lower: above or below only when the two
    seed ranges do not overlap (as in :func:`_verdict`), else level within the seeds' spread."""
    pts_a = [r for r in val_rows if r["family"] == a]
    out = []
    for q in sorted((r for r in val_rows if r["family"] == b), key=lambda r: r[cost]):
        ok = [p for p in pts_a if p[cost] <= q[cost]]
        if not ok:
            out.append(f"- {b} {q['setting']} ({cost} {q[cost]:.3g}): {a} has no setting as cheap")
            continue
        p = max(ok, key=lambda r: r["precision@1"])
        diff = p["precision@1"] - q["precision@1"]
        verdict = _verdict(p, q)
        how = (
            f"is level with it within the seeds' spread ({diff:+.3f} on the mean)"
            if verdict == "level"
            else f"is {abs(diff):.3f} {verdict} it"
        )
        out.append(
            f"- {b} {q['setting']} ({q['precision@1']:.3f} at {cost} {q[cost]:.3g}): {a} "
            f"{p['setting']} {how} at {cost} {p[cost]:.3g}"
        )
    if out:
        out.insert(0, f"\n**{a} against {b} at equal or lower {cost}** (validation):\n")
    return out


def _losses(members: list[dict]) -> str:
    """The training losses, with the families trained with each when there are several."""
    by: dict[str, set] = defaultdict(set)
    for m in members:
        if "config" in m:
            by[m["config"]["loss"]["name"]].add(m.get("family", "?"))
    if len(by) <= 1:
        return next(iter(by), "?")
    return ", ".join(f"{loss} ({', '.join(sorted(f))})" for loss, f in sorted(by.items()))


def setup_lines(sweep: dict, of: str = "") -> list[str]:
    """The recipe and sizes the members ran with, read from their own recorded configs, and
    the median seconds each stage took (the reference member's benchmark apart)."""
    members = sweep["members"]
    if not members or "config" not in members[0]:
        return []
    # A sparse member's config (its code dimension is the sparse codes'), else the first's.
    c = next((m["config"] for m in members if m.get("sparse") and "config" in m), None)
    c = c or members[0]["config"]
    t, d, m, b = c["train"], c["data"], c["model"], c["benchmark"]
    r = c["regularizer"]
    kw = m.get("backbone_kwargs", {})
    lines = [
        f"## Set-up{of} (read from the members' recorded configs)",
        "",
        f"- data: {d['source']}, {d.get('validation_size', 0):,} training images carved out as "
        f"the validation split (seed {d.get('split_seed', 0)}); training-time evaluation on "
        f"`{d.get('eval_split', 'test')}`.",
        f"- model: {m['backbone']} {kw}, code dimension {m['dim']} (dense members: their "
        f"`model.dim`), head BatchNorm {'with' if m.get('batch_norm_scale', True) else 'without'}"
        f" learned scale; loss {_losses(members)}.",
        f"- training: {t['num_steps']} steps of {t['batch_size']}, regulariser warm-up "
        f"{r.get('warmup_steps', 0)} steps ({r.get('schedule', '')}), penalty on the "
        f"{r.get('on', 'codes')}.",
        f"- benchmark: accuracy over {b['num_queries']:,} test queries, ms/query timed on "
        f"{b.get('timing_queries', 0) or b['num_queries']:,} of them, median of {b['repeats']} "
        f"repeats, {b['threads']} thread(s), top {b['k']}.",
    ]
    stages: dict[str, list[float]] = defaultdict(list)
    reference = []
    ref = sweep.get("reference")
    for member in members:
        is_ref = bool(ref) and member["name"] == reference_name(ref, member["seed"])
        for stage, sec in member.get("seconds", {}).items():
            if stage == "benchmark" and is_ref:
                reference.append(sec)
            else:
                stages[stage].append(sec)
    if stages:
        med = ", ".join(f"{k} {np.median(v):.0f} s" for k, v in stages.items())
        ref_s = ""
        if reference:
            ref_s = f"; the reference member's benchmark {np.median(reference):.0f} s"
        env = members[0].get("environment", {})
        lines.append(
            f"- time per member (median over members, {env.get('cpus', '?')} CPUs): {med}{ref_s}."
        )
    return lines + [""]


def _load_sweep(path: str) -> dict:
    try:
        with open(path) as f:
            sweep = json.load(f)
    except FileNotFoundError:
        raise ValueError(
            f"no sweep record at {path}: run the sweep (or --mode=collect) first"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); rerun --mode=collect to rewrite it"
        ) from e
    if not isinstance(sweep, dict) or "members" not in sweep:
        raise ValueError(f"{path} is not a sweep record (no 'members'); give a sweep.json")
    sweep.setdefault("missing", [])
    return sweep


def _regimes(sweep: dict) -> list[str]:
    return [
        r for r in REGIMES if any(row["regime"] == r for m in sweep["members"] for row in m["rows"])
    ]


def write_results(
    sweep_paths: str | Sequence[str], out_path: str, commands: Sequence[str] = ()
) -> str:
    """Writes the study's Markdown report (and its plot beside it) from one or more sweeps
    (e.g. the class/instance study and the open-set sweep, each regime from one of them);
    returns the text. A single sweep whose members have no benchmark rows (a tuning sweep) gets
    :func:`write_tuning`'s report."""
    paths = [sweep_paths] if isinstance(sweep_paths, str) else list(sweep_paths)
    if not paths:
        raise ValueError("no sweep given: name at least one sweep.json")
    sweeps = [_load_sweep(p) for p in paths]
    if len(sweeps) == 1:
        sweep = sweeps[0]
        if sweep["members"] and not any(m["rows"] for m in sweep["members"]):
            return write_tuning(sweep, paths[0], out_path, commands)
    owner: dict[str, int] = {}
    for i, sw in enumerate(sweeps):
        for r in _regimes(sw):
            if r in owner:
                raise ValueError(
                    f"regime {r!r} has rows in both {paths[owner[r]]} and {paths[i]}: give each "
                    "regime's sweep once"
                )
            owner[r] = i
    regimes = [r for r in REGIMES if r in owner]
    curves_by_regime = {r: curve_points(sweeps[owner[r]], r) for r in regimes}
    val_by_sweep = [validation_table(sw) for sw in sweeps]
    png = os.path.splitext(out_path)[0] + ".png"
    plot(curves_by_regime, val_by_sweep[0], png)
    finished = "; ".join(
        f"{p}: {len(sw['members'])} members finished "
        f"(seeds {sorted({m['seed'] for m in sw['members']})}), not yet run: "
        f"{len(sw['missing'])}"
        + (
            f" ({', '.join(sw['missing'][:8])}{', ...' if len(sw['missing']) > 8 else ''})"
            if sw["missing"]
            else ""
        )
        for p, sw in zip(paths, sweeps, strict=True)
    )
    lines = [
        "# Results: the FLOPs trade-off against its peers at equal cost",
        "",
        "Written by `python -m sparse_flops.bench.study` from the sweep's own records; no "
        "figure here is typed by hand. Reproduce with:",
        "",
        "```",
        *commands,
        "python -m sparse_flops.bench.study "
        + " ".join(f"--sweep={p}" for p in paths)
        + f" --out={out_path}",
        "```",
        "",
        f"Members: {finished}.",
        "Every point below is the mean accuracy over the seeds that finished it (`seeds`), with "
        "min-max, at the median cost over those seeds (a run slowed throughout by a loaded shared "
        "machine moves a mean, not a median; each run's own timing is the median of its repeats).",
        "Hyper-parameters are read on the validation split; every accuracy and timing is on the "
        "test split (timings: 1 thread).",
        "",
        f"![trade-off curves]({os.path.basename(png)})",
        "",
    ]
    summary: list[str] = []
    body_start = len(lines)
    for regime in regimes:
        curves = curves_by_regime[regime]
        acc = accuracy_key(regime)
        title = regime.replace("_", "-").capitalize()
        n_items = sorted(
            {
                row["n"]
                for m in sweeps[owner[regime]]["members"]
                for row in m["rows"]
                if row["regime"] == regime and "n" in row
            }
        )
        size = f", {', '.join(f'{n:,}' for n in n_items)} items" if n_items else ""
        lines += [f"## {title} retrieval ({acc}{size})", ""]
        table = []
        for curve in CURVES:
            for p in sorted(curves.get(curve, []), key=lambda p: p["ms"]):
                front = any(p is q for q in pareto(curves[curve], "ms"))
                table.append(
                    {
                        "method": curve,
                        "setting": p["setting"],
                        "seeds": p["seeds"],
                        acc: p["acc"],
                        "min-max": f"{p['acc_min']:.3f}-{p['acc_max']:.3f}",
                        "ms/query": p["ms"],
                        "MACs/query": p["MACs"],
                        "Pareto (ms)": "yes" if front else "",
                    }
                )
        lines += [markdown_table(table, list(table[0]) if table else []), ""]
        for cost, unit in (("ms", "ms/query"), ("MACs", "multiply-adds/query")):
            for a, b in (
                ("FLOPs", "L1"),
                ("FLOPs", "dense exact"),
                ("FLOPs", "PCA"),
                ("FLOPs", "LSH"),
                ("FLOPs", "PQ"),
                ("FLOPs", "IVF-PQ"),
                ("two-stage FLOPs", "dense exact"),
                ("two-stage FLOPs", "LSH"),
            ):
                block = equal_cost_lines(curves, a, b, cost, unit)
                if block:
                    summary.append(f"- {regime}: " + plain_statement(curves, a, b, cost, unit))
                    lines += [
                        f"**{a} against {b} at equal {unit}** (best accuracy within each budget):",
                        "",
                        *block,
                        "",
                    ]
        lines += [
            "**Speed-up over exact dense search at equal accuracy:**",
            "",
            *speedup_at_equal_accuracy(curves),
            "",
        ]
    for i, (path, sw, val_rows) in enumerate(zip(paths, sweeps, val_by_sweep, strict=True)):
        of = f" of {path}" if len(paths) > 1 else ""
        lines += setup_lines(sw, of)
        figure = " (the paper's Figure 4 b/d)" if i == 0 else ""
        lines += [
            f"## Validation{of}: sparsity, `sum p^2` and `R_sub`{figure}",
            "",
        ]
        if any(row["regime"] == "open_set" for m in sw["members"] for row in m["rows"]):
            lines += [
                "Instance-trained members are validated on instance retrieval, where each "
                "query has one relevant item (precision@1 = recall@1); class-trained ones "
                "(`cls_*`) on class retrieval.",
                "",
            ]
        lines += [markdown_table(val_rows, _shown(val_rows)), ""]
        lines += dominance_lines(val_rows, "flops", "l1") + dominance_lines(val_rows, "l1", "flops")
        lines.append("")
        for family in ("flops", "l1"):
            c = chosen_weight(val_rows, family)
            if c:
                lines.append(
                    f"- Validation choice for {family}: {c['setting']} (the sparsest within 0.01 "
                    f"precision@1 of the family's best on validation: {c['precision@1']:.3f} at "
                    f"{c['mean_nonzeros']:.1f} non-zeros)."
                )
        lines.append("")
    lines[body_start:body_start] = [
        "## In short (counted from the comparisons below)",
        "",
        *summary,
        "",
        *(
            []
            if "open_set" in regimes
            else [
                "The million-item open-set table (distractors embedded in chunks, NT-Xent "
                "models) is not part of this report yet: its rows will come from the same "
                "records once run.",
                "",
            ]
        ),
    ]
    text = "\n".join(lines) + "\n"
    io_utils.atomic_write_text(out_path, text)
    return text


FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "sweep", [], "A sweep's sweep.json; repeat for several (each regime from one of them)."
)
flags.DEFINE_string("out", "docs/results.md", "The Markdown report to write (plot beside it).")
flags.DEFINE_multi_string("command", [], "Commands that produced the sweep, listed in the report.")


def main(argv):
    del argv
    if not FLAGS.sweep:
        raise app.UsageError("--sweep must name a sweep.json (repeat it for several)")
    for path in FLAGS.sweep:
        if not os.path.isfile(path):
            raise app.UsageError(f"--sweep must name a sweep.json, got {path!r} (no such file)")
    write_results(FLAGS.sweep, FLAGS.out, FLAGS.command)


if __name__ == "__main__":
    app.run(main)
