"""The speed benchmark's table: per-round ratios vs FLOOR, printed and written with provenance."""

import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
NOISY = 10.0  # % of the CPU taken by other processes above which a round is left out
LEGEND = {
    "floor": "the protocol's FLOOR: hand-written loop, hard CE + τ²·KL on logits, torch's default AdamW",
    "floor_fused": "FLOOR with AdamW(fused=True): what the feature terms alone cost is fadkd_full / floor_fused",
    "fadkd_full": "fadkd's step as it trains (fadkd.run.step.train_step, AdamW fused as train.fused_adamw=true): "
    "α KD + β cos + γ MSE (Linear 384→768 per pair) + δ attention MSE per head + ce, pairs 2→1 … 12→6",
    "fadkd_full_protocol_adamw": "the same step with the protocol's (torch's default) AdamW, like FLOOR and the peers",
    "fadkd_cached": "fadkd_full reading the teacher's outputs from fadkd's cache (no teacher forward)",
    "fadkd_contrast": "fadkd_full + loss.contrast=1 (InfoNCE on mean-pooled projected states, every pair, in-batch)",
    "fadkd_dkd": "fadkd_full with loss.kd=dkd (decoupled KD, a=1, b=8) as the α term",
    "fadkd_magnitude": "fadkd_full with loss.balance=magnitude (each term × |ce| / |term|, detached)",
    "fadkd_gradnorm": "fadkd_full with loss.balance=gradnorm (each term × ‖∇z ce‖ / ‖∇z term‖, z = hidden_states[0])",
    "old_fadkd_full": "fadkd_full as the --old checkout runs it (its own code and .venv), in the same rounds",
    "old_fadkd_full_protocol_adamw": "fadkd_full_protocol_adamw as the --old checkout runs it, in the same rounds",
    "textbrewer": "TextBrewer 0.2.1.post1 GeneralDistiller, hidden MSE + attention MSE (bench/peers/)",
    "torchdistill": "torchdistill 1.1.5 DistillationBox, hooks, hidden MSE + attention MSE + KD (bench/peers/)",
}


def _cell(r: dict) -> str:
    cpu = f"; CPU {r['cpu_ratio_vs_floor']:.3f}x" if r.get("cpu_ratio_vs_floor") else ""
    return f"{seconds(r['median_step_s'])} ({r['ratio_vs_floor']:.3f}x{cpu})"


def seconds(value: float) -> str:
    """A step time: 3 decimals, 5 under 0.1 s (a GPU's steps take milliseconds)."""
    return f"{value:.5f}" if value < 0.1 else f"{value:.3f}"


def environment(records: list[dict]) -> list[str]:
    """The md header's lines on where the methods ran (each JSON line carries bench/common.py's environment())."""
    first = records[0]
    device = first.get("device", "cpu")
    name = f" ({first['device_name']})" if first.get("device_name") else ""
    cuda = f", CUDA {first['cuda']}" if first.get("cuda") else ""
    return [
        f"- device: {device}{name}{cuda}, torch {first.get('torch', '?')}",
        f"- dtype: {first.get('dtype', 'fp32')}" + (" (autocast bf16 around the forwards and the loss; fp32 weights, "
        "gradients and AdamW)" if first.get("dtype") == "bf16" else ""),
        f"- weights: {first.get('weights', 'pretrained')}; {first.get('steps', 20)} timed steps per method and round",
    ]  # fmt: skip


def summarize(
    records: list[dict],
    meta: dict,
    when: str,
    results: Path = RESULTS,
    name: str = "speed",
    limit: float = NOISY,
    append: bool = False,
) -> None:
    """Append the records to <name>.jsonl; write <name>.md (append: add a section to it instead)."""
    floors = {r["round"]: r["median_step_s"] for r in records if r["method"] == "floor"}
    fused = {r["round"]: r["median_step_s"] for r in records if r["method"] == "floor_fused"}
    cpu_floors = {r["round"]: r["median_cpu_s"] for r in records if r["method"] == "floor" and "median_cpu_s" in r}
    for r in records:
        r["ratio_vs_floor"] = r["median_step_s"] / floors[r["round"]] if r["round"] in floors else None
        has_cpu = r["round"] in cpu_floors and "median_cpu_s" in r  # the CPU seconds of a step, as the wall's
        r["cpu_ratio_vs_floor"] = r["median_cpu_s"] / cpu_floors[r["round"]] if has_cpu else None
        r["ratio_vs_floor_fused"] = r["median_step_s"] / fused[r["round"]] if r["round"] in fused else None
    results.mkdir(parents=True, exist_ok=True)
    with open(results / f"{name}.jsonl", "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")

    gpu = any(r.get("peak_gpu_mib") is not None for r in records)
    noisy = {r["round"] for r in records if r["other_cpu_pct"] > limit}
    clean = [r for r in records if r["round"] not in noisy and r["ratio_vs_floor"] is not None]
    columns = [
        "method",
        "median step s",
        "samples/s",
        "ratio vs FLOOR",
        "ratio vs floor_fused",
        "CPU s/step",
        "CPU ratio vs FLOOR",
        "peak RSS MiB",
        *(["peak GPU MiB"] if gpu else []),
        "other CPU %",
        "rounds",
    ]
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in clean if r["method"] == method]
        if not mine:
            continue
        vs_fused = [r["ratio_vs_floor_fused"] for r in mine if r["ratio_vs_floor_fused"]]
        cpu = [r["median_cpu_s"] for r in mine if "median_cpu_s" in r]
        cpu_ratio = [r["cpu_ratio_vs_floor"] for r in mine if r["cpu_ratio_vs_floor"]]
        rows.append([
            method,
            seconds(statistics.median(r["median_step_s"] for r in mine)),
            f"{statistics.median(r['samples_per_s'] for r in mine):.1f}",
            f"{statistics.median(r['ratio_vs_floor'] for r in mine):.3f}",
            f"{statistics.median(vs_fused):.3f}" if vs_fused else "-",
            f"{statistics.median(cpu):.3f}" if cpu else "-",
            f"{statistics.median(cpu_ratio):.3f}" if cpu_ratio else "-",
            f"{max(r['peak_rss_mib'] for r in mine):.0f}",
            *([f"{max(r['peak_gpu_mib'] or 0 for r in mine):.0f}"] if gpu else []),
            f"{max(r['other_cpu_pct'] for r in mine):.1f}",
            str(len(mine)),
        ])  # fmt: skip
    table = Table(title="speed: median over clean rounds of each round's median step (ratio within the round)")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    per_round = ["| round | " + " | ".join(dict.fromkeys(r["method"] for r in records)) + " |"]
    for rnd in sorted({r["round"] for r in records}):
        cells = {r["method"]: _cell(r) for r in records if r["round"] == rnd and r["ratio_vs_floor"] is not None}
        flag = " (noisy, left out)" if rnd in noisy else ""
        per_round.append(
            f"| {rnd}{flag} | "
            + " | ".join(cells.get(m, "-") for m in dict.fromkeys(x["method"] for x in records))
            + " |"
        )
    md = [
        f"{'##' if append else '#'} Speed benchmark ({when})",
        "",
        f"- command: `{meta['command']}`",
        f"- commit: `{meta['commit']}`",
        f"- machine: {meta['machine']}",
        *environment(records),
        f"- rounds with other processes over {limit:.0f} % of the CPU left out: {sorted(noisy) or 'none'}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        *[f"- {m}: {LEGEND[m]}" for m in dict.fromkeys(r["method"] for r in records) if m in LEGEND],
        "",
        "Each round, median step s (ratio vs that round's FLOOR; CPU: the same for CPU seconds per step):",
        "",
        per_round[0],
        "|" + "---|" * (per_round[0].count("|") - 1),
        *per_round[1:],
    ]
    old = (results / f"{name}.md").read_text() + "\n" if append and (results / f"{name}.md").exists() else ""
    (results / f"{name}.md").write_text(old + "\n".join(md) + "\n")
    print(f"wrote {results / name}.md and appended to {results / name}.jsonl")
