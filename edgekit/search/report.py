"""The search report, rendered from a run folder's ``run.json`` and trial store alone.

``render_report(run_dir)`` writes ``report/``: three PNG plots (validation accuracy against
tensor arena, flash and latency: every evaluated config, the Pareto set highlighted with each
space's two-dimensional front, the chosen model starred, exported models at their measured
size, the budgets as dashed lines), ``report.html`` (self-contained: plots embedded, the Pareto
table, the chosen model, per-space statistics), ``report.md`` and ``report.json``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

from edgekit.search.budget import Budget
from edgekit.search.store import TRIALS_FILE, read_records, read_run, write_json_atomic
from edgekit.search.trials import (
    Trial,
    choose,
    evaluated_trials,
    export_arena,
    export_fits,
    misfits,
    pareto_front,
)
from edgekit.units import format_size

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
PLOTS = {
    "arena": ("acc_vs_sram.png", "arena_bytes", "tensor arena (KiB)", 1 / 1024),
    "flash": ("acc_vs_flash.png", "flash_bytes", "flash (KiB)", 1 / 1024),
    "latency": ("acc_vs_latency.png", "latency_ms", "latency (ms, analytic model)", 1.0),
}
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def report_files(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Where :func:`render_report` writes each file (they may not exist yet)."""
    folder = Path(run_dir) / REPORT_DIR
    files = {"html": folder / "report.html", "markdown": folder / "report.md",
             "json": folder / "report.json"}  # fmt: skip
    files.update({f"plot_{key}": folder / name for key, (name, *_) in PLOTS.items()})
    return files


def _collect(run_dir: Path) -> dict[str, Any]:
    saved = read_run(run_dir)
    settings = saved["settings"]
    records = read_records(run_dir / TRIALS_FILE)
    trials = evaluated_trials(records)
    front = pareto_front(trials)
    budget = Budget.from_dict(settings["budget"])
    over = misfits(records, budget)
    chosen = choose(trials, over)
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        if record.get("kind") == "trial":
            per_space = counts.setdefault(record["space"], {})
            per_space[record["status"]] = per_space.get(record["status"], 0) + 1
    return {
        "saved": saved,
        "settings": settings,
        "budget": budget,
        "misfits": over,
        "trials": trials,
        "pareto": front,
        "chosen": chosen,
        "exports": _by_model(records, "export"),
        "finetunes": _by_model(records, "finetune"),
        "trained": _by_model(records, "trained"),
        "summaries": {r["space"]: r for r in records if r.get("kind") == "summary"},
        "counts": counts,
    }


def _by_model(records: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The records of ``kind`` by (space, genome); a later one replaces an earlier one."""
    return {(r["space"], r["genome"]): r for r in records if r.get("kind") == kind}


def render_report(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """(Re-)render the report of a run folder; returns the files written."""
    run_dir = Path(run_dir)
    data = _collect(run_dir)
    files = report_files(run_dir)
    files["html"].parent.mkdir(parents=True, exist_ok=True)
    for key, (_, attribute, label, scale) in PLOTS.items():
        _plot(data, attribute, label, scale, files[f"plot_{key}"])
    summary = _summary(data)
    write_json_atomic(files["json"], summary)
    files["markdown"].write_text(_markdown(data, summary), encoding="utf-8")
    files["html"].write_text(_html(data, summary, files), encoding="utf-8")
    logger.info("report written to %s", files["html"])
    return files


# --- figures ------------------------------------------------------------------------------------
def _measured(export: dict[str, Any], attribute: str) -> float | None:
    if attribute == "arena_bytes":
        value = export_arena(export)
        return None if value is None else float(value)
    if attribute == "flash_bytes":
        return float(export["flash_bytes"])
    return None


def _front_2d(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both (smaller x, higher y), by increasing x."""
    out: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or y > out[-1][1]:
            out.append((x, y))
    return out


def _plot(data: dict[str, Any], attribute: str, label: str, scale: float, path: Path) -> None:
    from matplotlib.figure import Figure

    trials: list[Trial] = data["trials"]
    front = {t.key for t in data["pareto"]}
    chosen: Trial | None = data["chosen"]
    figure = Figure(figsize=(6.4, 4.4), dpi=110)
    axes = figure.subplots()
    spaces = sorted({t.space for t in trials})
    for i, space in enumerate(spaces):
        color = _COLORS[i % len(_COLORS)]
        mine = [t for t in trials if t.space == space and t.val_accuracy is not None]
        xs = [getattr(t, attribute) * scale for t in mine]
        ys = [100 * t.val_accuracy for t in mine]  # type: ignore[operator]
        axes.scatter(xs, ys, s=14, color=color, alpha=0.3, linewidths=0,
                     label=f"{space}: evaluated ({len(mine)})")  # fmt: skip
        best = [(x, y) for x, y, t in zip(xs, ys, mine, strict=True) if t.key in front]
        if best:
            axes.scatter(*zip(*best, strict=True), s=34, color=color, edgecolors="black",
                         linewidths=0.6, label=f"{space}: Pareto set ({len(best)})")  # fmt: skip
        stairs = _front_2d(list(zip(xs, ys, strict=True)))
        if len(stairs) > 1:
            axes.step(*zip(*stairs, strict=True), where="post", color=color, linewidth=1,
                      alpha=0.8)  # fmt: skip
    for (space, genome), export in data["exports"].items():
        measured = _measured(export, attribute)
        trial = next((t for t in trials if t.key == (space, genome)), None)
        if measured is None or trial is None or trial.val_accuracy is None:
            continue
        y = 100 * trial.val_accuracy
        x = getattr(trial, attribute) * scale
        arrow = {"arrowstyle": "->", "color": "0.3", "linewidth": 0.8}
        axes.annotate("", xy=(measured * scale, y), xytext=(x, y), arrowprops=arrow)
        axes.scatter([measured * scale], [y], s=60, marker="D", facecolors="none",
                     edgecolors="black", linewidths=1.0, zorder=4,
                     label="exported int8 model (measured)")  # fmt: skip
    if chosen is not None and chosen.val_accuracy is not None:
        axes.scatter([getattr(chosen, attribute) * scale], [100 * chosen.val_accuracy],
                     marker="*", s=260, color="gold", edgecolors="black", linewidths=0.8,
                     zorder=5, label=f"chosen: {chosen.space}")  # fmt: skip
    budget: Budget = data["budget"]
    limit = {"arena_bytes": budget.sram_bytes, "flash_bytes": budget.flash_bytes,
             "latency_ms": budget.latency_ms}[attribute]  # fmt: skip
    if limit is not None:
        axes.axvline(limit * scale, color="tab:red", linestyle="--", linewidth=1,
                     label="budget")  # fmt: skip
    axes.set_xlabel(label)
    axes.set_ylabel("validation accuracy (%, inherited)")
    axes.grid(alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        axes.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    settings = data["settings"]
    axes.set_title(f"{', '.join(settings['spaces'])} on {settings['board']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="png")


# --- tables ---------------------------------------------------------------------------------
def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    chosen: Trial | None = data["chosen"]
    budget: Budget = data["budget"]
    spaces: dict[str, Any] = {}
    for space, counts in data["counts"].items():
        summary = data["summaries"].get(space, {})
        spaces[space] = {"records": counts, "stats": summary.get("stats"),
                         "smallest": summary.get("smallest")}  # fmt: skip
    exports = [dict(e) for e in data["exports"].values()]
    chosen_export = None if chosen is None else data["exports"].get(chosen.key)
    return {
        "run": str(data["saved"].get("created_at")),
        "settings": data["settings"],
        "budget": budget.to_dict(),
        "chosen": None if chosen is None else {**chosen.to_dict(), "export": chosen_export},
        "pareto": [t.to_dict() for t in data["pareto"]],
        "evaluated": len(data["trials"]),
        "spaces": spaces,
        "exports": exports,
        "finetunes": list(data["finetunes"].values()),
        "trained_alone": list(data["trained"].values()),
        "memory_model": "config-based TFLite Micro model (edgekit.estimate.from_config)",
        "latency_model": "analytic, uncalibrated priors (edgekit.estimate.latency)",
    }


_COLUMNS = ("#", "space", "genome", "val acc", "test acc", "arena (est)", "flash (est)",
            "latency (ms)", "MACs", "params", "measured")  # fmt: skip


def _rows(data: dict[str, Any]) -> list[tuple[list[str], bool]]:
    chosen: Trial | None = data["chosen"]
    rows = []
    for i, trial in enumerate(data["pareto"]):
        export = data["exports"].get(trial.key)
        measured = "-"
        if export is not None:
            arena = export_arena(export)
            measured = (
                f"int8 test {_percent(export.get('int8_test_accuracy'))}, arena "
                f"{format_size(int(arena)) if arena else '?'}, flash "
                f"{format_size(int(export['flash_bytes']))}"
            )
        rows.append((
            [str(i), trial.space, trial.genome, _percent(trial.val_accuracy),
             _percent(trial.test_accuracy), format_size(trial.arena_bytes),
             format_size(trial.flash_bytes), f"{trial.latency_ms:.2f}", f"{trial.macs:,}",
             f"{trial.params:,}", measured],
            chosen is not None and trial.key == chosen.key,
        ))  # fmt: skip
    return rows


def _chosen_lines(data: dict[str, Any]) -> list[str]:
    chosen: Trial | None = data["chosen"]
    if chosen is None:
        return ["No model was evaluated."]
    lines = [
        f"Chosen: {chosen.space} `{chosen.genome}` (highest validation accuracy on the Pareto "
        "set)",
        f"- validation accuracy {_percent(chosen.val_accuracy)} (inherited from the supernet, "
        f"BatchNorm recalibrated); test {_percent(chosen.test_accuracy)}",
        f"- estimated: arena {format_size(chosen.arena_bytes)}, flash "
        f"{format_size(chosen.flash_bytes)}, latency {chosen.latency_ms:.2f} ms, "
        f"{chosen.macs:,} MACs, {chosen.params:,} parameters",
    ]
    alone = data["trained"].get(chosen.key)
    if alone is not None:
        lines.append(
            f"- trained on its own from fresh weights for {alone['epochs']} epoch(s) "
            f"({alone['train_seconds']:.0f} s on {alone['device']}): validation "
            f"{_percent(alone['val_accuracy'])}"
        )
    tune = data["finetunes"].get(chosen.key)
    if tune is not None:
        lines.append(
            f"- fine-tuned {tune['epochs']} epoch(s): validation "
            f"{_percent(tune['val_accuracy_before'])} -> {_percent(tune['val_accuracy_after'])}"
            f" ({'kept' if tune['kept'] else 'discarded'})"
        )
    export = data["exports"].get(chosen.key)
    if export is not None:
        firmware = export.get("arena_firmware_bytes")
        lines.append(
            f"- exported int8 bundle {export['bundle']}: test accuracy "
            f"{_percent(export.get('int8_test_accuracy'))} in TFLite Micro "
            f"(fp32 {_percent(export.get('fp32_test_accuracy'))}); tensor arena measured "
            f"{format_size(export['arena_measured_host_bytes'])} (x86-64 host)"
            + (f", {format_size(firmware)} for the board's build" if firmware else "")
            + f"; flash {format_size(export['flash_bytes'])}; fits the budgets: "
            + ("yes" if export_fits(export, data["budget"]) else "NO")
        )
    for key in sorted(data["misfits"]):
        over = data["exports"][key]
        lines.append(
            f"- passed over: {key[0]} `{key[1]}` (more accurate) needs "
            f"{format_size(int(export_arena(over) or 0))} of "
            f"arena and {format_size(int(over['flash_bytes']))} of flash once exported, over "
            "the budgets its estimate met"
        )
    return lines


def _stats_lines(data: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    lines = []
    for space, info in summary["spaces"].items():
        records = info["records"]
        stats = info.get("stats") or {}
        tau = stats.get("predictor_kendall_tau")
        lines.append(
            f"- {space}: {records.get('evaluated', 0)} evaluated, "
            f"{records.get('over_budget', 0)} offspring over budget (rejected before any "
            f"accuracy work), {records.get('screened_out', 0)} screened out by the predictor; "
            f"initial population from {stats.get('draws', '?')} random draws "
            f"({stats.get('rejected', '?')} over budget in all); "
            f"{stats.get('generations', 0)} generation(s); predictor Kendall tau "
            + ("-" if tau is None else f"{tau:.2f}")
            + f" over {stats.get('predicted_evaluations', 0)} predicted evaluations"
        )
    return lines


def _header(data: dict[str, Any]) -> list[str]:
    s, budget = data["settings"], data["budget"]
    search = s["search"]
    return [
        f"- board: {s['board']}; budgets: {budget.describe()}",
        f"- data: {s['data']} (train/val/test {'/'.join(map(str, s['data_sizes']))})",
        f"- search: {search['strategy']}"
        + (" + GBDT predictor" if search["strategy"] == "nsga2" and search["predictor"] else "")
        + f", {search['evaluations']} evaluations per space, population "
        f"{search['population']}, seed {search['seed']}",
        "- arena and flash: the config-based memory model, equal to TFLite Micro's arena and the "
        "shipped file's size; latency: analytic model with uncalibrated priors",
    ]


def _markdown(data: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = [f"# Search report: {', '.join(data['settings']['spaces'])}", "", *_header(data),
             "", *_chosen_lines(data), "", "## Search", "", *_stats_lines(data, summary), "",
             "## Pareto set (chosen in bold)", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]  # fmt: skip
    for cells, is_chosen in _rows(data):
        shown = [f"**{c}**" if is_chosen else c for c in cells]
        lines.append("| " + " | ".join(shown) + " |")
    lines += ["", "## Plots", ""]
    for key, (name, *_) in PLOTS.items():
        lines.append(f"![accuracy vs {key}]({name})")
    return "\n".join(lines) + "\n"


def _html(data: dict[str, Any], summary: dict[str, Any], files: dict[str, Path]) -> str:
    esc = html.escape
    images = []
    for key in PLOTS:
        encoded = base64.b64encode(files[f"plot_{key}"].read_bytes()).decode("ascii")
        images.append(f'<img alt="accuracy vs {key}" src="data:image/png;base64,{encoded}">')
    head = "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)
    body = "".join(
        f'<tr{" class=chosen" if is_chosen else ""}>'
        + "".join(f"<td>{esc(c)}</td>" for c in cells)
        + "</tr>"
        for cells, is_chosen in _rows(data)
    )

    def items(lines: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{esc(line.lstrip('- '))}</li>" for line in lines) + "</ul>"

    chosen_lines = _chosen_lines(data)
    title = f"Search report: {', '.join(data['settings']['spaces'])}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
td:nth-child(2), td:nth-child(3), td:nth-child(11) {{ text-align: left; }}
tr.chosen {{ background: #fff3b0; font-weight: bold; }}
img {{ max-width: 32%; min-width: 380px; margin: 0.3em; }}
code {{ background: #f3f3f3; }}
</style></head><body>
<h1>{esc(title)}</h1>
{items(_header(data))}
<h2>Chosen model</h2>
<p>{esc(chosen_lines[0])}</p>{items(chosen_lines[1:])}
<h2>Accuracy against arena, flash and latency</h2>
<div>{"".join(images)}</div>
<h2>Pareto set ({len(data["pareto"])} of {len(data["trials"])} evaluated; chosen highlighted)</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Search</h2>
{items(_stats_lines(data, summary))}
<p>Machine-readable: <code>report.json</code>; raw trials: <code>{esc(TRIALS_FILE)}</code>.</p>
<script type="application/json" id="edgekit-report">{esc(json.dumps(summary["pareto"]))}</script>
</body></html>
"""


__all__ = ["REPORT_DIR", "render_report", "report_files"]
