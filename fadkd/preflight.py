"""Checks on the command line before Hydra composes anything, and errors turned into one line.

- `check_keys`: every `section.key=` override names a schema field (`+loss.alpah=1`, which
  Hydra accepts and the schema then drops, is refused too), with a "did you mean" for typos,
  and a field with a fixed set of words (fadkd/config/choices.py) gets one of them: the message
  is fadkd's (`choose`), not OmegaConf's.
- `check_run_dir`: hydra.run.dir / hydra.sweep.dir is a folder fadkd can create and write,
  with names the file system accepts; the default folder under outputs/ too.
- `run_dirname`: the resolver behind conf/hydra/default.yaml's run folder names: overrides
  whose values are paths are left out, and a name too long for the file system is shortened.
- `check_model_files`: a local model folder's safetensors files are readable (not truncated).
- `check_eval_keys`: `fadkd eval`'s overrides name keys of the run's config.yaml and keep its task.
- `out_folder`: the --out folder of table, plot and report.
- `out_of_memory`: a failed allocation as one line: how much, and what to lower.
- `explain`: an OSError (permissions, disk full, a path that is a file) as one FadkdError line.
"""

import dataclasses
import difflib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from omegaconf import OmegaConf
from safetensors import safe_open

from fadkd.config.checks import choose
from fadkd.config.choices import Choice
from fadkd.config.schema import Config
from fadkd.errors import FadkdError

NAME_MAX = 255  # bytes per path component on Linux / macOS file systems
DIRNAME_MAX = 120  # the override part of a run folder's name, in bytes
MIN_FREE = 1 << 20  # bytes a run folder's disk must have free before a run starts (config files, logs)


def _schema_sections() -> dict[str, type]:
    return {f.name: f.type for f in dataclasses.fields(Config)}


def _check_choice(key: str, value: str, kind: type[Choice]) -> None:
    """The word given to an Enum field (each word of a sweep's a,b,c); Hydra's functions and interpolations
    (choice(...), ${...}) are left to OmegaConf, which refuses a wrong word too, in its own words."""
    if any(c in value for c in "$([{"):
        return
    for word in value.split(","):
        choose(kind, key, word.strip().strip("'\""))


def _overrides(args: list[str]) -> list[tuple[str, str]]:
    """(key, value) of each `key=value` argument (Hydra's flags and their values skipped)."""
    out = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        out.append((key.lstrip("+~"), value))
    return out


def check_keys(args: list[str]) -> None:
    """Refuse an override of a key the schema does not have (suggesting the closest ones), or of a choice
    field with a word it does not take."""
    sections = _schema_sections()
    for key, value in _overrides(args):
        if "." not in key or "@" in key or "/" in key or key.startswith("hydra."):
            continue
        section, field = key.split(".")[:2]
        if section not in sections:
            close = ["student"] if section == "model" else difflib.get_close_matches(section, sections, n=1)
            hint = f"did you mean {close[0]}.{field}? " if close else ""  # finetune's model= fills student.*
            raise FadkdError(
                f"{key}: '{section}' is not a config section; {hint}the sections are {', '.join(sections)} "
                "(`fadkd train --help` lists their keys)"
            )
        types = {f.name: f.type for f in dataclasses.fields(sections[section])}
        names = list(types)
        if field not in names:
            close = difflib.get_close_matches(field, names, n=2)
            hint = f"did you mean {' or '.join(f'{section}.{c}' for c in close)}? " if close else ""
            raise FadkdError(
                f"{key}: Key '{field}' not in '{sections[section].__name__}'; {hint}the keys of {section}: "
                f"{', '.join(names)}"
            )
        kind = types[field]
        if key.count(".") == 1 and isinstance(kind, type) and issubclass(kind, Choice):
            _check_choice(key, value, kind)


def _writable_folder(key: str, path: Path) -> None:
    """path is, or can be created as, a folder this process can write."""
    for part in path.parts:
        if len(part.encode()) > NAME_MAX:
            raise FadkdError(
                f"{key}: the folder name '{part[:40]}...' is {len(part.encode())} bytes, longer than the "
                f"{NAME_MAX} the file system allows; choose a shorter {key}"
            )
    if path.exists() and not path.is_dir():
        raise FadkdError(f"{key}={path} is a file, not a folder; choose another {key}")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FadkdError(f"{key}={path}: {existing} is a file, so no folder can be made below it; choose another {key}")
    try:  # made now, as Hydra would a moment later, and written to once
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied", str(existing))
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        if shutil.disk_usage(path).free < MIN_FREE:  # Hydra writes .hydra/ first: a full disk fails inside it
            raise OSError(errno.ENOSPC, "no space left", str(path))
    except OSError as err:
        raise FadkdError(
            f"{key}={path}: cannot create or write the folder ({explain(err)}); choose a folder you can "
            f"write, e.g. {key}=outputs/my-run"
        ) from None


def _unquoted(value: str) -> str:
    """A Hydra override value without the quotes Hydra removes ('/tmp/my run' -> /tmp/my run)."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def check_run_dir(args: list[str]) -> None:
    """hydra.run.dir / hydra.sweep.dir (or outputs/ and multirun/ under the working folder)."""
    given = {k: _unquoted(v) for k, v in _overrides(args)}
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for name in ("hydra.run.dir", "hydra.sweep.dir"):
        if name in given and not given[name].strip().strip("'\""):
            raise FadkdError(
                f"{name}= is empty, which would write the run's files (config.yaml, student/, checkpoints/) into the "
                f"current folder {Path.cwd()}; give a folder, e.g. {name}=outputs/my-run"
            )
    if "${" in given.get(key, ""):
        return  # an interpolation: Hydra resolves it
    path = Path(given[key]).expanduser() if key in given else Path.cwd() / ("multirun" if multirun else "outputs")
    _writable_folder(key, path.absolute())


def hydra_record(args: list[str]) -> dict[Path, bytes]:
    """The .hydra/ files of an existing run in hydra.run.dir: Hydra rewrites them before fadkd can refuse
    the folder (fadkd/run/folder.py), so the CLI puts them back when it does."""
    given = {k: _unquoted(v) for k, v in _overrides(args)}
    if "hydra.run.dir" not in given:
        return {}
    folder = Path(given["hydra.run.dir"]).expanduser() / ".hydra"
    return {p: p.read_bytes() for p in folder.glob("*.yaml")} if folder.is_dir() else {}


def _split_top(text: str) -> list[str]:
    """Split Hydra's override_dirname at the commas between overrides (not those inside [...])."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]] if text else []


def run_dirname(override_dirname: str) -> str:
    """The override part of a run folder name: no path values, at most DIRNAME_MAX bytes."""
    kept = [p for p in _split_top(override_dirname) if "/" not in p and "\\" not in p]
    name = ",".join(kept)
    if len(name.encode()) <= DIRNAME_MAX:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    short = name.encode()[: DIRNAME_MAX - 12].decode(errors="ignore")
    return f"{short}..{digest}"


def register_dirname_resolver() -> None:
    if not OmegaConf.has_resolver("fadkd_dirname"):
        OmegaConf.register_new_resolver("fadkd_dirname", run_dirname)


def check_model_files(cfg) -> None:
    """Each local model folder's *.safetensors opens (a truncated download fails here, not mid-load)."""
    for role in ("teacher", "student"):
        path = getattr(cfg, role).path
        folder = Path(path).expanduser() if path else None
        if folder is None or not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
                raise FadkdError(
                    f"{role}.path: {file} cannot be read ({str(err).splitlines()[0]}): the file is truncated "
                    "or corrupt; download or save the model again"
                ) from None


def check_eval_keys(args: list[str], saved, run_dir: Path) -> None:
    """Every eval override names a key of the run's config.yaml, and none changes the task it was trained on."""
    for arg in args:
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        if key in ("task", "task.name") and value != saved.task.name:
            raise FadkdError(
                f"{key}={value}: the student of {run_dir} was trained on {saved.task.name}, and fadkd eval "
                f"evaluates a run on its own task (its head has that task's labels); leave {key} out, or train "
                f"a run on {value}"
            )
        if key != "run_dir" and OmegaConf.select(saved, key, default="<missing>") == "<missing>":
            raise FadkdError(
                f"{key}={value}: fadkd eval has no key {key}; it takes run_dir= and keys of the run's config.yaml "
                "such as task.data_dir, task.max_eval_samples, train.eval_batch_size (`fadkd eval --help`)"
            )


def out_folder(out: Path | None) -> Path | None:
    """--out of table, plot and report: a folder, created when missing; a file or an unwritable place refused."""
    if out is None:
        return None
    if out.exists() and not out.is_dir():
        raise FadkdError(f"--out {out} is a file; give a folder (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FadkdError(
            f"--out {out}: cannot create the folder ({explain(err)}); choose a folder you can write"
        ) from None
    return out


HINTS = {
    errno.EACCES: "permission denied: check its permissions or choose another folder",
    errno.EPERM: "operation not permitted: check its permissions or choose another folder",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.ENAMETOOLONG: "a name in the path is too long for the file system: shorten it",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder where a file was expected",
    errno.EEXIST: "it already exists",
    errno.ENOENT: "no such file or folder",
}


def out_of_memory(err: BaseException, cfg, out_dir: Path) -> FadkdError | None:
    """A failed allocation (torch's CPU allocator, CUDA, Python's MemoryError) as one line: how much did not
    fit and what to lower; None for any other error. What was saved before it (checkpoints) is untouched."""
    text = str(err)
    if not (isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    found = re.search(r"allocate (\d+) bytes", text)
    size = (
        f"{int(found.group(1)) / 2**30:.2f} GiB"
        if found
        else (re.findall(r"allocate ([\d.]+ [KMGT]i?B)", text) or ["?"])[0]
    )
    kept = any((out_dir / "checkpoints").glob("step-*"))
    s = cfg.student
    model = (
        f"the student (student.hidden_size={s.hidden_size}, student.intermediate_size={s.intermediate_size}, "
        f"student.num_layers={s.num_layers})"
        if s.path is None
        else f"the model size (student.path={s.path})"
    )
    return FadkdError(
        f"out of memory: an allocation of {size} did not fit; lower train.batch_size (now {cfg.train.batch_size}), "
        f"train.eval_batch_size (now {cfg.train.eval_batch_size}), task.max_length (now {cfg.task.max_length}) or "
        f"{model}" + (f"; the checkpoints in {out_dir / 'checkpoints'} are intact" if kept else "")
    )


def explain(err: OSError) -> FadkdError:
    """One line naming the path and the cause of an OSError."""
    path = err.filename if err.filename is not None else "(unknown path)"
    cause = HINTS.get(err.errno, err.strerror or str(err))
    return FadkdError(f"{path}: {cause}")
