"""Speed benchmark: FLOOR vs fadkd (full loss, live teacher and cached) vs TextBrewer, torchdistill.

    make bench                       # = .venv/bin/python bench/speed.py --rounds 3
    python bench/speed.py --method fadkd_full     # one method, one process (what rounds call)
    python bench/speed.py --device cuda --dtype bf16 --name speed_gpu    # bench/gpu/run.sh's part

The protocol (bench/common.py, ../shared/reference/speed-protocol.md): one fixed batch of 32
SST-2 sentences, all-mpnet-base-v2 teacher -> all-MiniLM-L6-v2 student, 2 threads, 3 warm-up +
20 timed steps, median step time. Each method runs in a fresh process per round, methods in a
rotated order each round, so drift and noise hit all of them; ratios are taken within a round.
Rounds where other processes took over 10 % of the CPU are reported and left out of the summary
(--noisy). --device and --dtype reach every method's process through FADKD_BENCH_DEVICE / FADKD_BENCH_DTYPE
(bench/common.py says what bf16 means); the table goes to <results>/<name>.md and <name>.jsonl. Each
step's CPU seconds are recorded beside its wall time: on a machine others load, compare those, with
FADKD_BENCH_THREADS=1. The old_* methods run another commit's checkout side by side:

    git worktree add ../wt-old <commit> && (cd ../wt-old && make install)
    python bench/speed.py --old ../wt-old --methods floor fadkd_full old_fadkd_full --minutes 15 --append
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
RESULTS = ROOT / "bench" / "results"
CACHE_DIR = Path(os.environ.get("FADKD_BENCH_CACHE", "/tmp/fadkd-bench-cache"))
PEER_PYTHON = os.environ.get("FADKD_PEER_PYTHON")  # one interpreter with both peers (the GPU run's), else their venvs
PEERS = {
    "textbrewer": (Path(PEER_PYTHON or ROOT / ".venv-textbrewer/bin/python"), ROOT / "bench/peers/textbrewer_step.py"),
    "torchdistill": (
        Path(PEER_PYTHON or ROOT / ".venv-torchdistill/bin/python"),
        ROOT / "bench/peers/torchdistill_step.py",
    ),
}
# fadkd_full / fadkd_cached: fadkd's step as it trains (AdamW fused, train.fused_adamw=true);
# *_protocol_adamw: the same with the protocol's (torch's default) AdamW, like FLOOR and the peers;
# floor_fused: FLOOR with fused AdamW, to read what the feature terms alone cost.
# fadkd_contrast / _dkd / _magnitude / _gradnorm: fadkd_full with one thing added or changed (loss.contrast=1,
# loss.kd=dkd, loss.balance=magnitude, loss.balance=gradnorm): each term's cost per step.
VARIANTS = {
    "fadkd_contrast": ({"contrast": 1.0}, {}),
    "fadkd_dkd": ({}, {"kd": "dkd"}),
    "fadkd_magnitude": ({"balance": "magnitude"}, {}),
    "fadkd_gradnorm": ({"balance": "gradnorm"}, {}),
}
# old_<method>: <method> as the checkout at --old (another commit, its own .venv) runs it, in the same rounds.
OLD = ["old_fadkd_full", "old_fadkd_full_protocol_adamw"]
METHODS = ["floor", "floor_fused", "fadkd_full", "fadkd_full_protocol_adamw", "fadkd_cached", *VARIANTS, *OLD, *PEERS]


def floor(fused: bool = False) -> dict:
    """Hand-written logits-only KD: hard CE + τ²·KL(τ=2); the least a KD step can cost."""
    teacher, student = common.models()
    batch = common.batch()
    optimizer = torch.optim.AdamW(student.parameters(), lr=common.LR, **({"fused": True} if fused else {}))

    def step():
        with common.autocast():
            with torch.no_grad():
                t = teacher(**batch["teacher"]).logits.float()
            s = student(**batch["student"]).logits.float()
            kl = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="batchmean")
            loss = F.cross_entropy(s, batch["labels"]) + 4 * kl
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return common.time_steps(step)


def _fadkd_parts(cached: bool, fused: bool = True, variant: str | None = None):
    """fadkd's own step (fadkd.run.step.train_step) with the full objective on the protocol's pairs
    (`variant`: one of VARIANTS, that change made to it)."""
    from dataclasses import replace

    from transformers import get_constant_schedule

    from fadkd.data.batches import Batch
    from fadkd.losses.balance import shared_layer
    from fadkd.losses.distill import DistillLoss, LossWeights
    from fadkd.losses.kd import TermChoice
    from fadkd.losses.mapping import LayerPair
    from fadkd.models import attention
    from fadkd.models.capture import layers_to_capture
    from fadkd.run.step import StepParts, build_optimizer
    from fadkd.teacher.base import CachedTeacher, LiveTeacher
    from fadkd.teacher.cache import TeacherCache

    b, device = common.batch(), common.DEVICE
    batch = Batch(student=b["student"], teacher=b["teacher"], labels=b["labels"], indices=torch.arange(common.BATCH))
    pairs = [LayerPair(s, t) for s, t in common.PAIRS]
    s_layers, t_layers = layers_to_capture(pairs, True, True)
    folder = CACHE_DIR / "protocol"
    if cached and not (folder / "meta.json").exists():
        raise SystemExit(f"no cache at {folder}: run `python bench/speed.py --build-cache` first")
    if cached:  # the teacher is never loaded: a cached run reads its outputs
        _, student = common.models(student_attn=attention.NAME, teacher=False)
        teacher = CachedTeacher(TeacherCache(folder), None, device)
    else:
        model, student = common.models(student_attn=attention.NAME)
        teacher = LiveTeacher(model, t_layers, None)  # what a run without the cache uses

    changed, choice = VARIANTS.get(variant, ({}, {}))
    weights = LossWeights(alpha=1.0, temperature=2.0, beta=1.0, gamma=1.0, delta=1.0, ce=1.0, **changed)
    if weights.balance == "gradnorm":  # its z, hidden_states[0] here, is kept as fadkd/losses/spec.py keeps it
        s_layers = replace(s_layers, hidden=s_layers.hidden | {shared_layer(weights, pairs)})
    s_width, t_width = common.widths()
    widths = {s: s_width for s, _ in common.PAIRS}, {t: t_width for _, t in common.PAIRS}
    loss_fn = DistillLoss(weights, pairs, *widths, False, choice=TermChoice(**choice)).to(device)
    named = [(n, p) for n, p in [*student.named_parameters(), *loss_fn.named_parameters()] if p.requires_grad]
    optimizer = build_optimizer([{"params": [p for _, p in named]}], common.LR, 0.01, fused, device)
    precision = "bf16" if common.DTYPE == "bf16" else "fp32"  # train.precision: the same autocast as the others
    parts = StepParts(student, teacher, loss_fn, optimizer, get_constant_schedule(optimizer),
                      named, s_layers, grad_clip=0.0, precision=precision)  # fmt: skip
    return parts, batch


def fadkd(cached: bool, fused: bool = True, variant: str | None = None) -> dict:
    from fadkd.run.step import train_step

    parts, batch = _fadkd_parts(cached, fused, variant)
    return common.time_steps(lambda: train_step(parts, batch, common.DEVICE))


def build_protocol_cache() -> None:
    """The teacher's outputs for the protocol batch, written by fadkd's cache builder."""
    from fadkd.config.schema import CacheConfig
    from fadkd.data.batches import Batch
    from fadkd.models.capture import Layers
    from fadkd.teacher.cache import build_cache

    b = common.batch()
    teacher, _ = common.models()
    rows = [{"_index": i} for i in range(common.BATCH)]

    def collator(chunk):  # the protocol batch is fixed: hand back its rows, unpadded per row
        idx = [r["_index"] for r in chunk]
        n = int(b["teacher"]["attention_mask"][idx].sum(1).max())
        t = {k: v[idx][:, :n] for k, v in b["teacher"].items()}
        return Batch(student=t, teacher=t, labels=b["labels"][idx])

    layers = Layers(frozenset(t for _, t in common.PAIRS), frozenset(t for _, t in common.PAIRS))
    c = teacher.config
    shape = {"layers": c.num_hidden_layers, "width": c.hidden_size, "heads": c.num_attention_heads}
    key = {"bench": "protocol", **{k: str(v) for k, v in common.environment().items()}}  # another shape: another cache
    build_cache(CACHE_DIR / "protocol", key, CacheConfig(dir=str(CACHE_DIR)), teacher, rows,
                collator, layers, shape, 2, 32, common.DEVICE, {})  # fmt: skip


def run_method(method: str, old: Path | None = None) -> dict | None:
    cwd = ROOT
    if method in OLD:
        if old is None or not (old / ".venv/bin/python").exists():
            print(f"{method}: no --old checkout with a .venv given; skipped", file=sys.stderr)
            return None
        cmd, cwd = [str(old / ".venv/bin/python"), str(old / "bench/speed.py"), "--method", method[4:]], old
    elif method in PEERS:
        python, script = PEERS[method]
        if not python.exists():
            print(f"{method}: {python} missing (run `make bench-peers`); skipped", file=sys.stderr)
            return None
        cmd = [str(python), str(script)]
    else:
        cmd = [sys.executable, __file__, "--method", method]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"{method} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, help="time one method in this process")
    parser.add_argument("--build-cache", action="store_true", help="write the protocol's teacher cache")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=common.DEVICE.type)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=common.DTYPE, help="bf16: autocast (common.py)")
    parser.add_argument("--name", help="results file stem (default: speed, or speed_gpu on cuda)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="default: %(default)s")
    parser.add_argument("--noisy", type=float, default=10.0, help="leave out rounds where others took over this %% CPU")
    parser.add_argument("--old", type=Path, help="another checkout (with its .venv) for the old_* methods")
    parser.add_argument("--minutes", type=float, help="start rounds (up to --rounds) only while they fit in this")
    parser.add_argument("--append", action="store_true", help="add a section to the md instead of replacing it")
    args = parser.parse_args()
    if args.build_cache:
        return build_protocol_cache()
    if args.method:
        result = {
            "floor": floor,
            "floor_fused": lambda: floor(fused=True),
            "fadkd_full": lambda: fadkd(False),
            "fadkd_full_protocol_adamw": lambda: fadkd(False, fused=False),
            "fadkd_cached": lambda: fadkd(True),
            **{v: (lambda v=v: fadkd(False, variant=v)) for v in VARIANTS},
        }
        return common.report(args.method, result[args.method]() if args.method in result else {})
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    os.environ.update(FADKD_BENCH_DEVICE=args.device, FADKD_BENCH_DTYPE=args.dtype)  # for every method's process
    from summary import summarize

    if "fadkd_cached" in args.methods:
        subprocess.run([sys.executable, __file__, "--build-cache"], cwd=ROOT, check=True)

    def commit(root: Path) -> str:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
        return out.strip() or "unknown (no git here)"

    gpu = f", {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if args.device == "cuda" else ""
    meta = {
        "command": "python bench/speed.py " + " ".join(sys.argv[1:]),
        "commit": commit(ROOT) + (f", old_*: {commit(args.old)}" if args.old else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}{gpu}",
    }
    records, start, longest = [], time.monotonic(), 0.0
    for r in range(1, args.rounds + 1):
        if args.minutes and r > 1 and time.monotonic() - start + longest > 60 * args.minutes:
            print(f"round {r} would not fit in {args.minutes} minutes: stopped after {r - 1}", flush=True)
            break
        began = time.monotonic()
        order = args.methods[r - 1 :] + args.methods[: r - 1]  # rotate who goes first
        for method in order:
            result = run_method(method, args.old)
            if result:
                result.pop("step_times", None)
                records.append({**result, "method": method, "round": r, **meta})
                print(f"round {r} {method}: {result['median_step_s']:.4f} s/step", flush=True)
        longest = max(longest, time.monotonic() - began)
    if not records:
        raise SystemExit("no method ran (see the errors above)")
    name = args.name or ("speed_gpu" if args.device == "cuda" else "speed")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    summarize(records, meta, when, args.results, name, args.noisy, append=args.append)


if __name__ == "__main__":
    main()
