"""The speed protocol's fixed setting, shared by every benchmarked method.

See ../shared/reference/speed-protocol.md: 32 SST-2 training sentences (seeded sample, seed 0),
truncated at 64 tokens, padded to the longest; teacher all-mpnet-base-v2 (eval, no grad),
student all-MiniLM-L6-v2 (train), 2 labels, AdamW lr 5e-5, fp32, 2 threads; layer pairs
teacher 2,4,...,12 -> student 1..6. A step = teacher forward + student forward + loss +
backward + optimizer step + zero_grad; 3 untimed warm-up steps, then 20 timed.

Every method runs in its own process and prints one JSON line (see `report`).
"""

import csv
import json
import os
import random
import resource
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("FADKD_ASSETS") or Path.home() / ".cache" / "fadkd-assets")
GLUE = Path(os.environ.get("FADKD_GLUE_DIR") or ROOT.parent / "shared" / "data" / "glue")
BATCH, MAX_LEN, LR = 32, 64, 5e-5
THREADS = int(os.environ.get("FADKD_BENCH_THREADS", "2"))  # the protocol's 2; 1 on a machine already loaded
PAIRS = [(s, 2 * s) for s in range(1, 7)]  # (student layer, teacher layer), 1-based
WARMUP, STEPS = 3, int(os.environ.get("FADKD_BENCH_STEPS", "20"))  # fewer only for a quick check


def sentences(n: int = BATCH, seed: int = 0) -> list[str]:
    with open(GLUE / "SST-2" / "train.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [rows[i][0] for i in random.Random(seed).sample(range(len(rows)), n)]


def batch() -> dict[str, torch.Tensor]:
    """Student inputs, teacher inputs (MPNet ids = MiniLM ids + 4 at every position), labels."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ASSETS / "minilm-l6")
    enc = tok(sentences(), truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
    t_tok = AutoTokenizer.from_pretrained(ASSETS / "mpnet-base")
    t_enc = t_tok(sentences(), truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
    labels = torch.tensor([i % 2 for i in range(BATCH)])
    return {
        "student": {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]},
        "teacher": {"input_ids": t_enc["input_ids"], "attention_mask": t_enc["attention_mask"]},
        "labels": labels,
    }


def models(student_attn: str | None = None, teacher: bool = True):
    """(teacher, student) as sequence classifiers with 2 labels, seeded heads (teacher None if not asked)."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    if teacher:
        teacher = AutoModelForSequenceClassification.from_pretrained(ASSETS / "mpnet-base", num_labels=2).eval()
        teacher.requires_grad_(False)
    else:
        teacher = None
    kwargs = {"attn_implementation": student_attn} if student_attn else {}
    student = AutoModelForSequenceClassification.from_pretrained(ASSETS / "minilm-l6", num_labels=2, **kwargs)
    return teacher, student.train()


def cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process) from /proc."""
    fields = open("/proc/stat").readline().split()[1:]
    busy = sum(int(x) for x in fields) - int(fields[3]) - int(fields[4])  # minus idle and iowait
    own = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime + stime


def time_steps(step) -> dict:
    """Run `step` WARMUP + STEPS times; the timed ones' median, and others' share of the CPU."""
    torch.set_num_threads(THREADS)
    for _ in range(WARMUP):
        step()
    busy0, own0 = cpu_jiffies()
    wall0 = time.perf_counter()
    times, cpu = [], []  # wall and this process's CPU seconds (every thread) per step
    for _ in range(STEPS):
        start, cpu0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
    wall = time.perf_counter() - wall0
    busy1, own1 = cpu_jiffies()
    hz = os.sysconf("SC_CLK_TCK")
    other = max(0, (busy1 - busy0) - (own1 - own0)) / hz
    return {
        "median_step_s": (median := _median(times)),
        # Other processes slow the wall clock down, hardly the CPU time a step needs: on a loaded machine
        # compare this, with one thread (FADKD_BENCH_THREADS=1: no spin-waiting between threads counted in it).
        "median_cpu_s": _median(cpu),
        "samples_per_s": BATCH / median,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "other_cpu_pct": 100 * other / (wall * (os.cpu_count() or 1)),
        "step_times": times,
    }


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else sum(xs[len(xs) // 2 - 1 : len(xs) // 2 + 1]) / 2


def report(method: str, result: dict) -> None:
    print(json.dumps({"method": method, **result}), flush=True)
