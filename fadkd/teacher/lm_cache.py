"""The causal-LM teacher cache: per token, the teacher's top-k tokens and the mass of the rest.

A causal LM's output is a vocabulary of floats per token (SmolLM2: 49,152, 96 KiB a token in
fp16: 100 GB for a million tokens), so the cache keeps, per training token and at the run's
temperature τ, the k most likely tokens (`cache.top_k`), their log-probabilities and the log of
the probability mass of all the others (the tail). The α term is then computed between the
student's and the teacher's distributions coarsened to those k + 1 outcomes
(fadkd/losses/kd.py, `sparse_kd_term`: exact at k = V, never above the live term, and for forward
KL short of it by exactly the teacher's tail mass times the divergence inside the tail).
The teacher runs once over the packed training blocks; every later step, epoch, resumed run and
run with the same key reads memory-mapped files instead of running the teacher.

Key (the folder's name, as in fadkd/teacher/cache.py): the teacher's weights, its tokenizer, the
training blocks' token ids (so the text, the tokenizer and task.block_size), k, τ, the kd
vocabulary, the dtype and the teacher layers stored. A cache under an explicit `cache.path` with
another key is refused, naming what differs.

Layout of <cache dir>/<key>/ (T = training tokens, k = top_k, widths and heads the teacher's):
- meta.json: key components, block lengths, k, τ, vocabulary, teacher shape, parameter count, build time
- topk_ids.bin    [T, k] uint16 (vocabularies up to 65,536 tokens) or int32
- topk_logp.bin   [T, k] float16 / bfloat16: log p_t^τ of those tokens
- tail.bin        [T] float32: log of the rest's mass at τ (-inf when k covers the vocabulary)
- hidden_<l>.bin  [T, width] float16 / bfloat16: mapped layers' states, only when β or γ > 0
- attn_<l>.bin    heads x n x n per block of n tokens: mapped layers' maps, only when δ > 0

Cost per training token: the top k take k·(2 + 2) + 4 bytes (k = 64: 260 B; 0.26 GB per
million tokens); each stored hidden layer takes width·2 bytes (SmolLM2's 576: 1,152 B, 1.15 GB
per million tokens, 4.4x the top 64); each attention layer heads·n·2 bytes (9 heads, 128-token
blocks: 2,304 B, 2.3 GB per million tokens). The estimate is printed before writing and a cache
over `cache.max_gb` is refused. SmolLM2's residual stream holds values near 2.6e4 (float16 ends
at 65,504): cache.dtype=bfloat16 keeps its range with fewer mantissa bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fadkd.config.schema import Config
from fadkd.data.lm_text import pad_blocks
from fadkd.losses.kd import KL_FAMILY, TopK
from fadkd.models.capture import Layers, Outputs, run_model
from fadkd.models.load import count_parameters
from fadkd.teacher import cache as store
from fadkd.teacher.cache import DTYPES, CacheError, cache_key, teacher_fingerprint

FORMAT = "lm-topk-1"


def check_lm_cache_config(cfg: Config) -> None:
    """Refuse, before any model is loaded, what the top-k cache cannot serve."""
    if not cfg.cache.enabled:
        return
    if cfg.loss.alpha > 0 and cfg.loss.kd not in KL_FAMILY:
        raise CacheError(
            f"cache.enabled=true with loss.kd={cfg.loss.kd}: the causal-LM cache keeps the teacher's top "
            f"{cfg.cache.top_k} tokens and the mass of the rest, and {cfg.loss.kd} "
            + ("reads every non-target probability" if cfg.loss.kd == "dkd" else "compares whole sorted distributions")
            + f"; use one of {', '.join(KL_FAMILY)} or set cache.enabled=false"
        )
    if cfg.loss.delta > 0 and cfg.loss.attn == "relations":
        raise CacheError(
            "cache.enabled=true with loss.attn=relations: the teacher cache stores hidden states and attention "
            "maps, not the query/key/value that relations compare; set cache.enabled=false (the live teacher) "
            "or loss.attn=maps"
        )


def _blocks_hash(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(np.asarray(row["input_ids"], dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def _tokenizer_hash(tok) -> str:
    try:
        text = tok.backend_tokenizer.to_str()
    except AttributeError:  # slow tokenizers: their vocabulary
        text = json.dumps(sorted(tok.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def lm_cache_components(cfg: Config, tok, rows: list[dict], layers: Layers, vocab: int) -> dict:
    """Everything that changes what the cache holds."""
    return {
        "format": FORMAT,
        "teacher": teacher_fingerprint(cfg.teacher),
        "teacher_tokenizer": _tokenizer_hash(tok),
        "train_blocks": _blocks_hash(rows),  # the text, its tokens and task.block_size
        "block_size": cfg.task.block_size,
        "top_k": min(cfg.cache.top_k, vocab),
        "temperature": cfg.loss.temperature,
        "vocab": vocab,  # the kd vocabulary: the first `vocab` logits (padded output layers)
        "hidden_layers": sorted(layers.hidden),
        "attention_layers": sorted(layers.attentions),
        "dtype": cfg.cache.dtype,
    }


def id_dtype(vocab: int):
    return np.uint16 if vocab <= 2**16 else np.int32


def estimate_parts(lengths: list[int], k: int, vocab: int, layers: Layers, shape: dict) -> dict[str, int]:
    """Bytes on disk of each part: top-k ids, log-probs and tail; hidden states; attention maps."""
    tokens = sum(lengths)
    return {
        "top-k": tokens * (k * (np.dtype(id_dtype(vocab)).itemsize + 2) + 4),
        "hidden states": len(layers.hidden) * tokens * shape["width"] * 2,
        "attention maps": len(layers.attentions) * sum(n * n for n in lengths) * shape["heads"] * 2,
    }


class LmTeacherCache:
    """A complete causal-LM cache folder, memory-mapped."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        self.dtype = DTYPES[self.meta["dtype"]]
        self.k, vocab = self.meta["top_k"], self.meta["vocab"]
        self.lengths = np.array(self.meta["lengths"])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.square_offsets = np.concatenate([[0], np.cumsum(self.lengths**2)])
        tokens = int(self.offsets[-1])
        self.ids = np.memmap(folder / "topk_ids.bin", dtype=id_dtype(vocab), mode="r", shape=(tokens, self.k))
        self.logp = np.memmap(folder / "topk_logp.bin", dtype=np.int16, mode="r", shape=(tokens, self.k))
        self.tail = np.memmap(folder / "tail.bin", dtype=np.float32, mode="r", shape=(tokens,))
        self.hidden = {int(k): self._map(f"hidden_{k}.bin") for k in self.meta["layers"]["hidden"]}
        self.attn = {int(k): self._map(f"attn_{k}.bin") for k in self.meta["layers"]["attentions"]}

    def _map(self, name: str) -> np.memmap:
        return np.memmap(self.folder / name, dtype=np.int16, mode="r")  # raw 16-bit values

    def _half(self, flat, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.array(flat[start:stop])).view(self.dtype).float()  # a copy: maps are read-only

    def outputs(self, indices: torch.Tensor, mask: torch.Tensor, device: torch.device) -> Outputs:
        """The stored teacher outputs of blocks `indices`, padded to the batch's length (zeros there)."""
        batch, length = mask.shape
        width, heads = self.meta["teacher"]["width"], self.meta["teacher"]["heads"]
        ids = torch.zeros(batch, length, self.k, dtype=torch.long)
        logp = torch.zeros(batch, length, self.k)
        tail = torch.zeros(batch, length)
        hidden = {layer: torch.zeros(batch, length, width) for layer in self.hidden}
        attentions = {layer: torch.zeros(batch, heads, length, length) for layer in self.attn}
        for b, i in enumerate(indices.tolist()):
            start, n = int(self.offsets[i]), int(self.lengths[i])
            ids[b, :n] = torch.from_numpy(self.ids[start : start + n].astype(np.int64))
            logp[b, :n] = self._half(self.logp, start, start + n)
            tail[b, :n] = torch.from_numpy(np.array(self.tail[start : start + n]))
            for layer, flat in self.hidden.items():
                hidden[layer][b, :n] = self._half(flat, start * width, (start + n) * width).view(n, width)
            first = int(self.square_offsets[i]) * heads
            for layer, flat in self.attn.items():
                attentions[layer][b, :, :n, :n] = self._half(flat, first, first + heads * n * n).view(heads, n, n)
        return Outputs(
            logits=None,
            hidden={k: v.to(device) for k, v in hidden.items()},
            attentions={k: v.to(device) for k, v in attentions.items()},
            mask=mask,
            topk=TopK(ids.to(device), logp.to(device), tail.to(device)),
        )


def topk_of(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [..., k], log p^τ [..., k], log tail mass [...]) of logits [..., V] at τ, in float32."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = logp.topk(k, dim=-1)
    tail = torch.logsumexp(logp.scatter(-1, ids, float("-inf")), dim=-1)  # -inf when k = V
    return ids, values, tail


@torch.no_grad()
def build_lm_cache(
    folder: Path, components: dict, cfg: Config, teacher, rows: list[dict], pad_id: int, layers: Layers,
    shape: dict, batch_size: int, device: torch.device, log=print,
) -> LmTeacherCache:  # fmt: skip
    """Run the teacher over the training blocks, write the cache atomically, open it."""
    k, vocab = components["top_k"], components["vocab"]
    lengths = [len(row["input_ids"]) for row in rows]
    parts = estimate_parts(lengths, k, vocab, layers, shape)
    size = sum(parts.values())
    detail = ", ".join(f"{name} {b / 2**30:.2f}" for name, b in parts.items() if b)
    log(f"teacher cache (causal LM, top {k} of {vocab}): {sum(lengths)} tokens, about {size / 2**30:.2f} GiB "
        f"({detail}) -> {folder}")  # fmt: skip
    if size > cfg.cache.max_gb * 2**30:
        raise CacheError(
            f"the causal-LM teacher cache would take {size / 2**30:.1f} GiB ({detail} GiB), over "
            f"cache.max_gb={cfg.cache.max_gb}; raise cache.max_gb, lower cache.top_k, train on fewer texts "
            "(task.max_train_samples), map fewer layers, or turn the cache off"
        )
    store.check_free_space(folder, size)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with store.writing(tmp):  # no .tmp folder left by a failure or Ctrl-C; a full disk is one line
        return _build(tmp, folder, components, cfg, teacher, rows, pad_id, layers, shape, batch_size, device)


def _build(tmp, folder, components, cfg, teacher, rows, pad_id, layers, shape, batch_size, device) -> LmTeacherCache:
    """The teacher's pass over the blocks into the data files of `tmp`, then the commit."""
    k, vocab, temperature = components["top_k"], components["vocab"], components["temperature"]
    lengths = [len(row["input_ids"]) for row in rows]
    dtype = DTYPES[cfg.cache.dtype]
    tokens, width, heads = sum(lengths), shape["width"], shape["heads"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    square_offsets = np.concatenate([[0], np.cumsum(np.array(lengths) ** 2)])

    def new_map(name: str, np_dtype, size: int) -> np.memmap:
        return store.new_map(tmp / name, np_dtype, size)  # a full disk fails here with OSError, not SIGBUS

    ids_map = new_map("topk_ids.bin", id_dtype(vocab), tokens * k)
    logp_map, tail_map = new_map("topk_logp.bin", np.int16, tokens * k), new_map("tail.bin", np.float32, tokens)
    hidden_maps = {layer: new_map(f"hidden_{layer}.bin", np.int16, tokens * width) for layer in sorted(layers.hidden)}
    attn_maps = {
        layer: new_map(f"attn_{layer}.bin", np.int16, int(square_offsets[-1]) * heads)
        for layer in sorted(layers.attentions)
    }

    def raw(x: torch.Tensor, what: str = "") -> np.ndarray:
        x = x.to(dtype)
        if what and not torch.isfinite(x).all():  # float16 ends at 65,504
            raise CacheError(
                f"the teacher's {what} do not fit {cfg.cache.dtype} (values beyond its range); set "
                "cache.dtype=bfloat16 (float32's range, fewer mantissa bits)"
            )
        return x.cpu().contiguous().view(torch.int16).reshape(-1).numpy()

    started = time.perf_counter()
    for chunk, out in teacher_passes(teacher, rows, pad_id, layers, batch_size, device):
        ids, logp, tail = topk_of(out.logits[..., :vocab], k, temperature)
        for b, i in enumerate(chunk):
            n, first = lengths[i], int(offsets[i])
            ids_map[first * k : (first + n) * k] = ids[b, :n].cpu().numpy().reshape(-1)
            logp_map[first * k : (first + n) * k] = raw(logp[b, :n])
            tail_map[first : first + n] = tail[b, :n].float().cpu().numpy()
            for layer, flat in hidden_maps.items():
                flat[first * width : (first + n) * width] = raw(out.hidden[layer][b, :n], f"layer {layer} states")
            for layer, flat in attn_maps.items():
                at = int(square_offsets[i]) * heads
                flat[at : at + heads * n * n] = raw(out.attentions[layer][b, :, :n, :n])
    for flat in [ids_map, logp_map, tail_map, *hidden_maps.values(), *attn_maps.values()]:
        flat.flush()
    del ids_map, logp_map, tail_map, hidden_maps, attn_maps
    meta = {
        "key": cache_key(components),
        "components": components,
        "dtype": cfg.cache.dtype,
        "top_k": k,
        "vocab": vocab,
        "temperature": temperature,
        "lengths": lengths,
        "teacher": shape,
        "teacher_params": count_parameters(teacher),
        "build_seconds": time.perf_counter() - started,  # the teacher's pass and the writes
        "layers": {"hidden": sorted(layers.hidden), "attentions": sorted(layers.attentions)},
    }
    return _commit(tmp, folder, meta)


def _commit(tmp: Path, folder: Path, meta: dict) -> LmTeacherCache:
    """meta.json last, then the folder replaced in one rename: a cache folder is complete or absent."""
    meta["files"] = store.file_record(tmp)  # checked when the cache is opened (fadkd/teacher/cache.py damage)
    (tmp / "meta.json").write_text(json.dumps(meta))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return LmTeacherCache(folder)


def teacher_passes(teacher, rows: list[dict], pad_id: int, layers: Layers, batch_size: int, device):
    """The teacher's Outputs over the training blocks in order, a batch at a time: (block indices, outputs)."""
    teacher.eval()
    for start in range(0, len(rows), batch_size):
        chunk = range(start, min(start + batch_size, len(rows)))
        inputs = {k: v.to(device) for k, v in pad_blocks([rows[i]["input_ids"] for i in chunk], pad_id).items()}
        yield chunk, run_model(teacher, inputs, layers)


@torch.no_grad()
def join_lm_cache_build(teacher, rows: list[dict], pad_id: int, layers: Layers, batch_size: int, device) -> None:
    """build_lm_cache's forwards on another rank of a sharded teacher (each gathers shards from every rank)."""
    for _ in teacher_passes(teacher, rows, pad_id, layers, batch_size, device):
        pass
