"""The speed protocol's fixed setting, shared by every benchmarked method.

See ../shared/reference/speed-protocol.md: 32 SST-2 training sentences (seeded sample, seed 0),
truncated at 64 tokens, padded to the longest; teacher all-mpnet-base-v2 (eval, no grad),
student all-MiniLM-L6-v2 (train), 2 labels, AdamW lr 5e-5, fp32, 2 threads; layer pairs
teacher 2,4,...,12 -> student 1..6. A step = teacher forward + student forward + loss +
backward + optimizer step + zero_grad; 3 untimed warm-up steps, then 20 timed.

Every method runs in its own process and prints one JSON line (see `report`). Set by the
environment (bench/speed.py's --device and --dtype set the first two for the processes it starts):
- FADKD_BENCH_DEVICE=cpu|cuda: where models and batch live; on cuda every timed step ends with
  torch.cuda.synchronize(), so a step's time is the device's, not the launch queue's.
- FADKD_BENCH_DTYPE=fp32|bf16: bf16 = torch.autocast(bfloat16) around the forwards and the loss,
  backward and AdamW outside it: fp32 master weights, gradients and optimizer state, bf16 matmuls,
  which is what fadkd's train.precision=bf16 does and what FSDP's MixedPrecisionPolicy(param_dtype=
  bf16, reduce_dtype=fp32) computes per device. Every method gets the same.
- FADKD_BENCH_RANDOM_WEIGHTS=1: a model folder with config.json and tokenizer but no weights is
  built from its config (seeded). Step time does not depend on the weights' values; the GPU run
  uses it because the weights cannot travel to the GPU machine (bench/gpu/run.sh). Recorded.
"""

import csv
import json
import os
import platform
import random
import resource
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("FADKD_ASSETS") or Path.home() / ".cache" / "fadkd-assets")
GLUE = Path(os.environ.get("FADKD_GLUE_DIR") or ROOT.parent / "shared" / "data" / "glue")
BATCH, MAX_LEN, LR = 32, 64, 5e-5
THREADS = int(os.environ.get("FADKD_BENCH_THREADS", "2"))  # the protocol: 2; the dry run and a loaded machine: 1
PAIRS = [(s, 2 * s) for s in range(1, 7)]  # (student layer, teacher layer), 1-based
WARMUP, STEPS = 3, int(os.environ.get("FADKD_BENCH_STEPS", "20"))  # fewer only for a quick check
DEVICE = torch.device(os.environ.get("FADKD_BENCH_DEVICE", "cpu"))
DTYPE = os.environ.get("FADKD_BENCH_DTYPE", "fp32")
RANDOM_WEIGHTS = os.environ.get("FADKD_BENCH_RANDOM_WEIGHTS") == "1"
if DTYPE not in ("fp32", "bf16"):
    raise SystemExit(f"FADKD_BENCH_DTYPE={DTYPE}: fp32 or bf16")


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
    labels = torch.tensor([i % 2 for i in range(BATCH)], device=DEVICE)
    return {
        "student": {k: enc[k].to(DEVICE) for k in ("input_ids", "attention_mask")},
        "teacher": {k: t_enc[k].to(DEVICE) for k in ("input_ids", "attention_mask")},
        "labels": labels,
    }


def random_weights() -> bool:
    """Whether models() builds the pair from config: RANDOM_WEIGHTS and a folder without weights."""
    return RANDOM_WEIGHTS and not any((ASSETS / "minilm-l6").glob("*.safetensors"))


def _load(name: str, **kwargs):
    """A sequence classifier with 2 labels from ASSETS/name: its weights, or (RANDOM_WEIGHTS) its config."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = ASSETS / name
    if RANDOM_WEIGHTS and not any(folder.glob("*.safetensors")):
        config = AutoConfig.from_pretrained(folder, num_labels=2, **kwargs)
        return AutoModelForSequenceClassification.from_config(config, **kwargs)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, **kwargs)


def models(student_attn: str | None = None, teacher: bool = True):
    """(teacher, student) as sequence classifiers with 2 labels, seeded heads (teacher None if not asked), on DEVICE."""
    torch.manual_seed(0)
    if teacher:
        teacher = _load("mpnet-base").to(DEVICE).eval()
        teacher.requires_grad_(False)
    else:
        teacher = None
    kwargs = {"attn_implementation": student_attn} if student_attn else {}
    return teacher, _load("minilm-l6", **kwargs).to(DEVICE).train()


def widths() -> tuple[int, int]:
    """(student, teacher) hidden sizes, from the models' configs (384, 768 for the protocol's pair)."""
    from transformers import AutoConfig

    return tuple(AutoConfig.from_pretrained(ASSETS / n).hidden_size for n in ("minilm-l6", "mpnet-base"))


def autocast():
    """The forwards' and the loss's precision context (FADKD_BENCH_DTYPE); backward and step go outside it."""
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16) if DTYPE == "bf16" else nullcontext()


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def environment() -> dict:
    """What a JSON line records about where it ran."""
    gpu = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None
    return {
        "device": DEVICE.type,
        "device_name": gpu or platform.processor() or platform.machine(),
        "dtype": DTYPE,
        "weights": "random (from config.json)" if random_weights() else "pretrained",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if DEVICE.type == "cuda" else None,
        "steps": STEPS,
    }


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
    sync()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats(DEVICE)
    busy0, own0 = cpu_jiffies()
    wall0 = time.perf_counter()
    times, cpu = [], []  # wall and this process's CPU seconds (every thread) per step
    for _ in range(STEPS):
        start, cpu0 = time.perf_counter(), time.process_time()
        step()
        sync()  # the step's kernels have finished, not only been queued
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
        "peak_gpu_mib": torch.cuda.max_memory_allocated(DEVICE) / 2**20 if DEVICE.type == "cuda" else None,
        "step_times": times,
    }


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else sum(xs[len(xs) // 2 - 1 : len(xs) // 2 + 1]) / 2


def report(method: str, result: dict) -> None:
    print(json.dumps({"method": method, **result, **environment()}), flush=True)
