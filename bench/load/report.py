"""The side-by-side table (markdown), the JSON file and the chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _ms(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    """One line per target: orders/s, latency per call, errors, oversells, server use."""
    out = ["| target | mode | orders/s | p50 ms | p99 ms | p99.9 ms | max ms | errors "
           "| filled | oversells | server CPU (cores) | server memory MiB |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        r = row["result"]
        lat = r["latency_ms"]
        errors = sum(r["errors"].values())
        outcome = r["outcome"]
        answered = outcome.get("filled", 0) + outcome.get("partial", 0) + outcome.get(
            "unfilled", 0)
        filled = (f"{100 * outcome.get('filled', 0) / answered:.0f}%" if answered else "-")
        check = row.get("check")
        oversells = str(check["oversells"]) if check else "-"
        server = r.get("server") or {}
        out.append(
            f"| {row['target']} | {row['mode']} | {r['orders_per_s']:,.0f} | {_ms(lat['p50'])} "
            f"| {_ms(lat['p99'])} | {_ms(lat['p99.9'])} | {_ms(lat['max'])} | {errors:,} "
            f"| {filled} | {oversells} | {server.get('cpu_cores', 0):.2f} "
            f"| {server.get('memory_mib', 0):,.0f} |")
    for row in rows:  # a mix of operations: each one's latency, under the same load
        operations = row["result"].get("latency_by_operation_ms")
        if not operations:
            continue
        out += ["", f"{row['target']} {row['mode']}, by operation:", "",
                "| operation | calls | p50 ms | p99 ms | max ms |",
                "| --- | ---: | ---: | ---: | ---: |"]
        out += [f"| {name} | {op['count']:,} | {_ms(op['p50'])} | {_ms(op['p99'])} "
                f"| {_ms(op['max'])} |" for name, op in operations.items()]
    return "\n".join(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "histogram"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(_plain(document), indent=2))


def chart(path: Path, rows: list[dict[str, Any]], sweeps: dict[str, list[dict[str, Any]]],
          title: str) -> None:
    """Left: closed-loop orders per second. Right: open-loop latency (p50 dashed, p99
    solid, from the intended send time) against the offered load, per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (bars, lines) = plt.subplots(1, 2, figsize=(15, 6.5))
    labels = [f"{row['target']}\n{row['mode']}" for row in rows]
    values = [row["result"]["orders_per_s"] for row in rows]
    colours = ["#888888" if row["target"].startswith("echo") else
               "#1f77b4" if row["target"].startswith("allocd") else
               "#d62728" if "PostgreSQL" in row["target"] else "#2ca02c" for row in rows]
    bars.barh(range(len(rows)), values, color=colours)
    bars.set_yticks(range(len(rows)), labels, fontsize=7)
    bars.invert_yaxis()
    bars.set_xscale("log")
    bars.set_xlabel("orders (echo: calls or items) per second, closed loop, log scale")
    for y, v in enumerate(values):
        bars.text(v, y, f" {v:,.0f}", va="center", fontsize=7)
    bars.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    bars.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    palette = {"allocd unary": "#1f77b4", "allocd stream": "#17becf", "PostgreSQL": "#d62728",
               "Redis": "#2ca02c"}
    for name, every in sweeps.items():
        colour = palette.get(name, "#9467bd")
        points = [p for p in every if p["calls"]]
        xs = [p["offered_per_s"] for p in points]
        lines.plot(xs, [p["latency_ms"]["p99"] for p in points], "o-", color=colour,
                   label=f"{name} p99")
        lines.plot(xs, [p["latency_ms"]["p50"] for p in points], "x--", color=colour,
                   alpha=0.6, label=f"{name} p50")
    lines.set_xscale("log")
    lines.set_yscale("log")
    lines.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    lines.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    lines.set_xlabel("offered load, orders per second (open loop)")
    lines.set_ylabel("latency from intended send time, ms")
    lines.grid(True, which="both", alpha=0.3)
    if sweeps:
        lines.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
