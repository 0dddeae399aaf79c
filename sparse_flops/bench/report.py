"""Reports of the benchmarks: JSON, Markdown tables and trade-off plots, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from sparse_flops import io_utils
from sparse_flops.bench.regimes import REGIMES


def jsonable(x):
    return json.loads(
        json.dumps(x, default=lambda o: list(o) if hasattr(o, "__iter__") else str(o))
    )


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


CODES_COLUMNS = (
    "codes",
    "method",
    "setting",
    "precision@1",
    "precision@10",
    "recall@1",
    "recall@10",
    "recall@100",
    "map@100",
    "mean_nonzeros",
    "bytes_per_item",
    "macs_per_query",
    "ms_per_query_1t",
    "ms_per_query_all",
    "speedup_vs_dense_1t",
    "build_s",
)
# The class regime's recall@k is not the headline (many relevant items); instance's precision@k
# equals recall@1 at k = 1 and is tiny beyond it.
_REGIME_DROPS = {
    "class": ("recall@1", "recall@10", "recall@100"),
    "instance": ("precision@10",),
    "open_set": ("precision@10",),
    "probe": ("precision@10",),
}
SCALE_COLUMNS = (
    "profile",
    "target_nonzeros",
    "mean_nonzeros",
    "r_sub",
    "macs_per_query",
    "expected_macs_per_query",
    "build_s",
    "ms_per_query_1t",
    "scatter_gups",
    "stream_gbs",
    "bound_ms",
    "ms_over_bound",
    "ms_over_bound_min",
    "ms_over_bound_max",
    "ms_per_query_reference_1t",
    "speedup_vs_reference_1t",
    "ms_per_query_batched_1t",
    "ms_per_query_all",
    "thread_speedup",
    "ms_per_query_scipy_1t",
    "speedup_vs_scipy_1t",
    "engines_agree",
    "index_bytes_per_posting",
    "index_mib",
    "forward_store_mib",
    "reference_index_mib",
    "peak_rss_mib",
)


def write_report(report: dict, out_dir: str) -> None:
    """Writes ``report.json``, ``report.md`` and ``tradeoff.png`` atomically to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    rows = report["rows"]
    if report["kind"] == "scale":
        columns = [c for c in SCALE_COLUMNS if any(c in r for r in rows)]
        body = "# Scale benchmark (synthetic codes)\n\n" + markdown_table(rows, columns)
    else:
        parts = ["# Retrieval trade-off"]
        for regime in REGIMES:
            sel = [r for r in rows if r["regime"] == regime]
            if not sel:
                continue
            columns = [
                c
                for c in CODES_COLUMNS
                if any(c in r for r in sel) and c not in _REGIME_DROPS[regime]
            ]
            n, nq = sel[0]["n"], sel[0]["queries"]
            parts.append(
                f"## {regime.replace('_', '-')} retrieval ({n} items, {nq} queries)\n\n"
                + markdown_table(sel, columns)
            )
        body = "\n\n".join(parts)
    if "machine_limits" in report:
        lim = report["machine_limits"]
        body += (
            "\n\n`bound_ms` = max(postings x bytes per posting / stream_gbs, postings / "
            "scatter_gups), with this core's stream bandwidth and scatter rate timed in turn with "
            "the row's one-thread search, repeat by repeat; `ms_over_bound` = ms_per_query_1t / "
            "bound_ms (medians); `ms_over_bound_min` and `_max`: the least and greatest of that "
            "ratio repeat by repeat, each repeat's time over the bound from its own rates. "
            f"At the start of the run, one core: stream {lim['stream_gbs']:.1f} GB/s, "
            f"scatter {lim['scatter_gups']:.2f} G updates/s."
        )
    md = (
        body
        + "\n\nEnvironment: "
        + ", ".join(f"{k}={v}" for k, v in report["environment"].items())
        + "\n"
    )
    io_utils.atomic_write_text(
        os.path.join(out_dir, "report.json"), json.dumps(report, indent=2, default=str)
    )
    io_utils.atomic_write_text(os.path.join(out_dir, "report.md"), md)
    plot_tradeoff(report, os.path.join(out_dir, "tradeoff.png"))
    print(md)


_MARKERS = {
    "dense exact (BLAS)": "s",
    "dense exact (faiss flat)": "D",
    "sparse index (ours)": "o",
    "scipy Q@D.T + argpartition": "x",
    "PCA + exact": "v",
    "LSH (Hamming)": "^",
    "PQ (faiss)": "P",
    "IVF-PQ (faiss)": "X",
    "two-stage: sparse + dense re-rank": "*",
}


def accuracy_key(regime: str) -> str:
    """The headline accuracy: precision@1 for class retrieval, recall@1 for instance retrieval
    (the fraction of queries whose own original ranks first)."""
    return "precision@1" if regime == "class" else "recall@1"


def plot_tradeoff(report: dict, path: str) -> None:
    """Accuracy against ms/query (one panel per regime), or, for the scale report, multiply-adds
    against ms/query per activation profile. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    if report["kind"] == "scale":
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for profile in sorted({r["profile"] for r in rows}):
            sel = [r for r in rows if r["profile"] == profile]
            macs = [r["macs_per_query"] for r in sel]
            ax.plot([r["ms_per_query_1t"] for r in sel], macs, "o-", label=f"ours, {profile}")
            ax.plot(
                [r["ms_per_query_scipy_1t"] for r in sel], macs, "x--", label=f"scipy, {profile}"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("multiply-adds per query")
        ax.set_xlabel("ms per query (one thread, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        axes = [ax]
    else:
        regimes = [g for g in REGIMES if any(r["regime"] == g for r in rows)]
        fig, axes = plt.subplots(1, len(regimes), figsize=(7 * len(regimes), 6.5), squeeze=False)
        axes = list(axes[0])
        codes = sorted({r["codes"] for r in rows})
        colors = {c: f"C{i % 10}" for i, c in enumerate(codes)}
        for ax, regime in zip(axes, regimes, strict=True):
            sel = [r for r in rows if r["regime"] == regime]
            key = accuracy_key(regime)
            seen = set()
            for r in sel:
                if key not in r:
                    continue
                label = f"{r['codes']}: {r['method']}"
                ax.scatter(
                    r["ms_per_query_1t"],
                    r[key],
                    color=colors[r["codes"]],
                    marker=_MARKERS.get(r["method"], "h"),
                    s=45,
                    label=None if label in seen else label,
                )
                seen.add(label)
                if r.get("setting"):
                    ax.annotate(
                        r["setting"].split(", re-rank")[0],
                        (r["ms_per_query_1t"], r[key]),
                        fontsize=6,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
            ax.set_xscale("log")
            ax.set_xlabel("ms per query (one thread, log scale)")
            ax.set_ylabel(key)
            ax.set_title(f"{regime} retrieval")
            ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[-1].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3)
    if report["kind"] == "scale":
        fig.tight_layout()
    else:
        fig.tight_layout(rect=(0, 0.22, 1, 1))
    io_utils.atomic_write_file(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
