"""The teacher-output cache: run the teacher once over the training set, then read it.

The teacher's outputs do not change during training, so they are computed once (rows sorted
by length, so batches carry little padding), stored unpadded in fp16/bf16, and memory-mapped by
every later epoch and every run that asks for the same thing. A cache folder is named by a key
over everything that changes its contents: the teacher's weights (file hashes, or the tiny
preset's config), both tokenizers and how the teacher's input is made from the student's, the
training rows, max length, the teacher layers stored and the dtype. A cache found under an
explicit `cache.path` with another key is refused with the components that differ.

Layout of <cache dir>/<key>/: meta.json (key components, lengths, offsets, teacher shape and dev
metrics, each data file's size and sha256: a file cut short or changed is named when the cache is
opened, and the cache is built again), logits.npy, and one raw file per stored layer: hidden_<l>.bin
([sum of lengths, width]) and attn_<l>.bin (heads x length x length per row, concatenated).
"""

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fadkd.config.schema import CacheConfig, ModelConfig
from fadkd.errors import FadkdError
from fadkd.models.capture import Layers, Outputs, run_model

FORMAT = 1
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class CacheError(FadkdError):
    """The teacher cache cannot be used as configured."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_fingerprint(cfg: ModelConfig) -> str:
    """Hash of the teacher's weights: its files, or the tiny preset's config (its init is seeded)."""
    if cfg.path is None:
        return _sha256_bytes(json.dumps(asdict(cfg), sort_keys=True).encode())
    folder = Path(os.path.expanduser(cfg.path))
    if not folder.is_dir():  # a Hub id: its revision is what we can name
        return _sha256_bytes(cfg.path.encode())
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return _sha256_bytes("".join(f"{p.name}:{_sha256_file(p)}" for p in files).encode())


def cache_key(components: dict) -> str:
    return _sha256_bytes(json.dumps(components, sort_keys=True).encode())[:24]


def estimate_bytes(lengths: list[int], layers: Layers, shape: dict, num_labels: int, dtype: str) -> int:
    """Disk the cache will take: unpadded hidden states and maps, fp32 logits."""
    item = torch.tensor([], dtype=DTYPES[dtype]).element_size()
    tokens, squares = sum(lengths), sum(n * n for n in lengths)
    per_layer_hidden = tokens * shape["width"] * item
    per_layer_attn = squares * shape["heads"] * item
    return (
        len(layers.hidden) * per_layer_hidden + len(layers.attentions) * per_layer_attn + len(lengths) * num_labels * 4
    )


def check_free_space(folder: Path, size: int) -> None:
    """Refuse a cache the disk cannot hold: a memory-mapped write to a full disk ends the process (SIGBUS)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    free, need = shutil.disk_usage(folder.parent).free, int(size * 1.05) + (1 << 20)
    if need > free:
        raise CacheError(
            f"the teacher cache needs about {need / 2**20:.1f} MiB but {folder.parent} has {free / 2**20:.1f} MiB "
            "free; free some space, set cache.dir=<a folder on a larger disk>, or turn the cache off "
            "(cache.enabled=false)"
        )


def new_map(path: Path, dtype, count: int) -> np.memmap:
    """A memory map of `count` values whose disk blocks are allocated now: a full disk fails here, with OSError."""
    nbytes = max(count, 1) * np.dtype(dtype).itemsize
    with open(path, "wb") as f:
        if hasattr(os, "posix_fallocate"):  # Linux; macOS has none: there the file is sparse, as before
            os.posix_fallocate(f.fileno(), 0, nbytes)
        else:
            f.truncate(nbytes)
    return np.memmap(path, dtype=dtype, mode="r+", shape=(max(count, 1),))


def file_record(folder: Path) -> dict[str, list]:
    """[size, sha256] of each data file of a cache folder being committed (meta.json holds it)."""
    return {p.name: [p.stat().st_size, _sha256_file(p)] for p in sorted(folder.iterdir()) if p.name != "meta.json"}


def damage(folder: Path, meta: dict) -> str | None:
    """What is wrong with a cache folder's files (missing, cut short, changed), or None when intact."""
    for name, (size, digest) in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, not {size}"
        if _sha256_file(path) != digest:
            return f"{name} does not match its checksum"
    return None


@contextmanager
def writing(tmp: Path):
    """A cache's .tmp folder goes when its build fails or is interrupted; a full disk is one CacheError line."""
    try:
        yield
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                f"the teacher cache could not be written to {tmp.parent}: no space left on the device (nothing "
                "half-written is kept); free some space, set cache.dir=<a larger disk>, or cache.enabled=false"
            ) from None
        raise


class TeacherCache:
    """A complete cache folder, memory-mapped."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        self.dtype = DTYPES[self.meta["dtype"]]
        self.lengths = np.array(self.meta["lengths"])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.square_offsets = np.concatenate([[0], np.cumsum(self.lengths**2)])
        self.logits = np.load(folder / "logits.npy", mmap_mode="r")
        self.hidden = {int(k): self._map(f"hidden_{k}.bin") for k in self.meta["layers"]["hidden"]}
        self.attn = {int(k): self._map(f"attn_{k}.bin") for k in self.meta["layers"]["attentions"]}

    def _map(self, name: str) -> np.memmap:
        return np.memmap(self.folder / name, dtype=np.int16, mode="r")  # raw 16-bit values

    def _rows(self, flat: np.memmap, start: int, count: int) -> Tensor:
        return torch.from_numpy(np.array(flat[start : start + count])).view(self.dtype)  # a copy: maps are read-only

    def outputs(self, indices: Tensor, mask: Tensor, device: torch.device) -> Outputs:
        """The stored teacher outputs of rows `indices`, padded to the batch's length."""
        batch, length = mask.shape
        width, heads = self.meta["teacher"]["width"], self.meta["teacher"]["heads"]
        idx = indices.tolist()
        logits = torch.from_numpy(np.stack([self.logits[i] for i in idx]))
        hidden = {}
        for layer, flat in self.hidden.items():
            out = torch.zeros(batch, length, width)
            for b, i in enumerate(idx):
                n = int(self.lengths[i])
                out[b, :n] = self._rows(flat, int(self.offsets[i]) * width, n * width).view(n, width).float()
            hidden[layer] = out.to(device)
        attentions = {}
        for layer, flat in self.attn.items():
            out = torch.zeros(batch, heads, length, length)
            for b, i in enumerate(idx):
                n = int(self.lengths[i])
                start = int(self.square_offsets[i]) * heads
                out[b, :, :n, :n] = self._rows(flat, start, heads * n * n).view(heads, n, n).float()
            attentions[layer] = out.to(device)
        return Outputs(logits=logits.to(device), hidden=hidden, attentions=attentions, mask=mask)


def open_cache(cfg: CacheConfig, components: dict, reader=None) -> tuple[Path, TeacherCache | None]:
    """(folder for this key, the cache if complete there). An explicit path must match the key.

    `reader` opens a complete folder (default TeacherCache; the causal-LM cache passes its own).
    """
    key = cache_key(components)
    folder = Path(os.path.expanduser(cfg.path)) if cfg.path else Path(os.path.expanduser(cfg.dir)) / key
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return folder, None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        print(f"teacher cache {folder}: meta.json cannot be read ({err}); building the cache again")
        return folder, None
    if meta.get("key") != key:
        differ = sorted(
            k for k in set(components) | set(meta["components"]) if components.get(k) != meta["components"].get(k)
        )
        raise CacheError(
            f"the teacher cache at {folder} was built for something else: {', '.join(differ)} differ. "
            "Use another cache.path, or leave cache.path unset so each key gets its own folder"
        )
    problem = damage(folder, meta)
    if problem is None:
        try:
            return folder, (reader or TeacherCache)(folder)
        except (OSError, ValueError, KeyError) as err:
            problem = f"{type(err).__name__}: {err}"
    print(f"teacher cache {folder} is damaged ({problem}); building it again")
    return folder, None


@torch.no_grad()
def build_cache(
    folder: Path,
    components: dict,
    cfg: CacheConfig,
    teacher,
    rows: list[dict],
    collator,
    layers: Layers,
    shape: dict,
    num_labels: int,
    batch_size: int,
    device: torch.device,
    extra_meta: dict,
    log=print,
) -> TeacherCache:
    """Run the teacher over `rows` (longest first), write the cache atomically, open it."""
    lengths = [int(collator([row]).student["attention_mask"].sum()) for row in rows]
    size = estimate_bytes(lengths, layers, shape, num_labels, cfg.dtype)
    log(f"teacher cache: {len(rows)} rows, about {size / 2**30:.2f} GiB on disk -> {folder}")
    if size > cfg.max_gb * 2**30:
        raise CacheError(
            f"the teacher cache would take {size / 2**30:.1f} GiB, over cache.max_gb={cfg.max_gb}; raise "
            "cache.max_gb, train on fewer rows (task.max_train_samples) or turn the cache off"
        )
    check_free_space(folder, size)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with writing(tmp):
        _write(tmp, lengths, cfg, teacher, rows, collator, layers, shape, num_labels, batch_size, device)
        meta = {
            "format": FORMAT,
            "key": cache_key(components),
            "components": components,
            "dtype": cfg.dtype,
            "lengths": lengths,
            "teacher": {**shape, "num_labels": num_labels},
            "layers": {"hidden": sorted(layers.hidden), "attentions": sorted(layers.attentions)},
            "files": file_record(tmp),
            **extra_meta,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return TeacherCache(folder)


def _write(tmp, lengths, cfg, teacher, rows, collator, layers, shape, num_labels, batch_size, device) -> None:
    """The teacher's pass over `rows`, longest first, into the data files of `tmp`."""
    dtype = DTYPES[cfg.dtype]
    width, heads = shape["width"], shape["heads"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    square_offsets = np.concatenate([[0], np.cumsum(np.array(lengths) ** 2)])
    # Preallocated memory maps, filled at each row's offset: rows are computed longest first.
    hidden_maps = {
        k: new_map(tmp / f"hidden_{k}.bin", np.int16, int(offsets[-1]) * width) for k in sorted(layers.hidden)
    }
    attn_maps = {
        k: new_map(tmp / f"attn_{k}.bin", np.int16, int(square_offsets[-1]) * heads) for k in sorted(layers.attentions)
    }
    logits = np.zeros((len(rows), num_labels), dtype=np.float32)
    for chunk, out in teacher_passes(teacher, rows, lengths, collator, layers, batch_size, device):
        for b, i in enumerate(chunk):
            n = lengths[i]
            logits[i] = out.logits[b].float().cpu().numpy()
            for k, flat in hidden_maps.items():
                values = out.hidden[k][b, :n].to(dtype).cpu().contiguous().view(torch.int16).reshape(-1)
                flat[int(offsets[i]) * width : int(offsets[i + 1]) * width] = values.numpy()
            for k, flat in attn_maps.items():
                values = out.attentions[k][b, :, :n, :n].to(dtype).cpu().contiguous().view(torch.int16).reshape(-1)
                flat[int(square_offsets[i]) * heads : int(square_offsets[i + 1]) * heads] = values.numpy()
    for flat in [*hidden_maps.values(), *attn_maps.values()]:
        flat.flush()
    del hidden_maps, attn_maps
    np.save(tmp / "logits.npy", logits)


def teacher_passes(teacher, rows: list[dict], lengths: list[int], collator, layers: Layers, batch_size: int, device):
    """The teacher's Outputs over `rows`, longest first, a batch at a time: (row indices, outputs)."""
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    teacher.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield chunk, run_model(teacher, collator([rows[i] for i in chunk]).to(device).teacher, layers)


@torch.no_grad()
def join_cache_build(teacher, rows: list[dict], collator, layers: Layers, batch_size: int, device) -> None:
    """build_cache's forwards on another rank of a sharded teacher (each gathers shards from every rank); no writes."""
    lengths = [int(collator([row]).student["attention_mask"].sum()) for row in rows]
    for _ in teacher_passes(teacher, rows, lengths, collator, layers, batch_size, device):
        pass
