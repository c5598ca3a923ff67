"""Splits, storage and caching of the synthetic data (ANDESVL.md §2-§3).

Every sample's generator seed is a function of (seed, split, domain, index) laid out in disjoint ranges, so
train, validation and test never share a seed. Datasets are Arrow (`datasets.save_to_disk`) cached under
`cache_root()` in a folder named by a hash of the parameters and of this package's source, so changing a
generator never serves stale data. The committed sample (`data_samples/<domain>/`) is JSONL + PNG.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets
from PIL import Image
from tqdm.auto import tqdm

from .base import METRIC_NAMES, Sample, assistant_message, user_message
from .preferences import preference_row
from .registry import GENERATORS, check_domains, generate
from .verifiable import verifiable_row

SPLITS: tuple[str, ...] = ("train", "validation", "test")
INDEX_STRIDE = 10_000_000  # samples per (seed, split, domain) range
MAX_DOMAINS = 64  # room for domains appended to the registry later
DEFAULT_N: dict[str, int] = {"train": 1000, "validation": 50, "test": 100}  # per domain
CHUNK = 1000  # rows held as PIL images before they are encoded
SAMPLES_FILE = "samples.jsonl"
REQUIRED_KEYS: tuple[str, ...] = ("domain", "task", "question", "answer", "metric", "images")

_TEXT = datasets.Value("string")
_MESSAGES = datasets.List({"role": _TEXT, "content": datasets.List({"type": _TEXT, "text": _TEXT})})
_COMMON = {"id": _TEXT, "domain": _TEXT, "task": _TEXT, "lang": _TEXT, "seed": datasets.Value("int64"),
           "images": datasets.List(datasets.Image())}
FEATURES: dict[str, datasets.Features] = {
    "sft": datasets.Features(_COMMON | {"messages": _MESSAGES, "question": _TEXT, "answer": _TEXT,
                                        "rationale": _TEXT, "options": datasets.List(_TEXT), "metric": _TEXT,
                                        "scene": _TEXT}),
    "preference": datasets.Features(_COMMON | {"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES,
                                               "answer": _TEXT, "metric": _TEXT}),
    "verifiable": datasets.Features(_COMMON | {"prompt": _MESSAGES, "question": _TEXT, "answer": _TEXT,
                                               "metric": _TEXT}),
}
ROWS: dict[str, Callable[[Sample], dict[str, Any]]] = {
    "sft": Sample.record, "preference": preference_row, "verifiable": verifiable_row,
}


def sample_seed(split: str, domain: str, index: int, seed: int = 0) -> int:
    """Generator seed of sample `index` of `domain` in `split`; injective, so splits never share a seed."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    if not 0 <= index < INDEX_STRIDE:
        raise ValueError(f"index {index} outside [0, {INDEX_STRIDE})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    domain_index = list(GENERATORS).index(check_domains(domain)[0])
    return ((seed * len(SPLITS) + SPLITS.index(split)) * MAX_DOMAINS + domain_index) * INDEX_STRIDE + index


def cache_root() -> Path:
    """$ANDES_DATA_CACHE, else $ANDES_CACHE_DIR/data, else <repo>/.cache/data."""
    if os.environ.get("ANDES_DATA_CACHE"):
        return Path(os.environ["ANDES_DATA_CACHE"])
    base = os.environ.get("ANDES_CACHE_DIR") or Path(__file__).resolve().parents[2] / ".cache"
    return Path(base) / "data"


def source_hash() -> str:
    """Hash of the generators' source files: part of every cache key."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_path(kind: str, split: str, domains: tuple[str, ...], n_per_domain: int, seed: int,
               cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of a cached dataset: named by kind and split, keyed by a hash of all parameters."""
    params = {"kind": kind, "split": split, "domains": list(domains), "n": n_per_domain, "seed": seed,
              "source": source_hash()}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir or cache_root()) / f"{kind}-{split}-{key}"


def iter_samples(split: str, domains: Iterable[str], n_per_domain: int, seed: int = 0,
                 progress: bool = True) -> Iterable[tuple[str, Sample]]:
    """(id, sample) for every index of every domain, rendered, with a progress bar."""
    domains = tuple(domains)
    bar = tqdm(total=len(domains) * n_per_domain, desc=f"{split} data", disable=not progress)
    for domain in domains:
        for index in range(n_per_domain):
            yield f"{split}-s{seed}-{domain}-{index:05d}", generate(domain, sample_seed(split, domain, index, seed))
            bar.update()
    bar.close()


def build_dataset(split: str, domains: str | list[str] | tuple[str, ...] | None = None,
                  n_per_domain: int | None = None, seed: int = 0, *, kind: str = "sft",
                  cache_dir: str | os.PathLike[str] | None = None, use_cache: bool = True,
                  progress: bool = True) -> datasets.Dataset:
    """Generate (or load from the cache) `n_per_domain` samples of each domain for `split`.

    kind: "sft" (messages + question/answer/scene), "preference" (prompt/chosen/rejected) or "verifiable"
    (prompt + answer + metric). `domains=None` means the eight visual domains; add "text_only" explicitly.
    """
    if kind not in FEATURES:
        raise ValueError(f"unknown kind {kind!r}; known: {list(FEATURES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    domains = check_domains(domains)
    n = DEFAULT_N[split] if n_per_domain is None else n_per_domain
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n_per_domain must be a positive int, got {n_per_domain!r}")
    path = cache_path(kind, split, domains, n, seed, cache_dir)
    if use_cache and (path / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(path))
    parts, rows = [], []
    for sid, sample in iter_samples(split, domains, n, seed, progress):
        rows.append({"id": sid} | ROWS[kind](sample))
        if len(rows) == CHUNK:  # encode to Arrow (PNG bytes) as we go, so PIL images do not pile up
            parts.append(datasets.Dataset.from_list(rows, features=FEATURES[kind]))
            rows = []
    if rows:
        parts.append(datasets.Dataset.from_list(rows, features=FEATURES[kind]))
    dataset = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if not use_cache:
        return dataset
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    dataset.save_to_disk(str(tmp))
    if (path / "dataset_info.json").is_file():  # another process finished first
        shutil.rmtree(tmp)
    else:
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return datasets.load_from_disk(str(path))


def build_preference_dataset(split: str, domains: str | list[str] | tuple[str, ...] | None = None,
                             n_per_domain: int | None = None, seed: int = 0, **kwargs: Any) -> datasets.Dataset:
    """Preference pairs (TRL DPO format) for MPO; same arguments as `build_dataset`."""
    return build_dataset(split, domains, n_per_domain, seed, kind="preference", **kwargs)


def build_verifiable_dataset(split: str, domains: str | list[str] | tuple[str, ...] | None = None,
                             n_per_domain: int | None = None, seed: int = 0, **kwargs: Any) -> datasets.Dataset:
    """Prompts with checkable answers for GRPO; same arguments as `build_dataset`."""
    return build_dataset(split, domains, n_per_domain, seed, kind="verifiable", **kwargs)


# ----------------------------------------------------------------------------- JSONL + PNG
def write_samples(out_dir: str | os.PathLike[str] = "data_samples", n_per_domain: int = 24,
                  domains: str | list[str] | tuple[str, ...] | None = None, split: str = "validation",
                  seed: int = 0) -> list[Path]:
    """Write `out_dir/<domain>/samples.jsonl` + one PNG per image (all domains, text-only too, by default)."""
    written = []
    for domain in tuple(GENERATORS) if domains is None else check_domains(domains):
        folder = Path(out_dir) / domain
        folder.mkdir(parents=True, exist_ok=True)
        for old in [*folder.glob("*.png"), folder / SAMPLES_FILE]:
            old.unlink(missing_ok=True)
        lines = []
        for sid, sample in iter_samples(split, (domain,), n_per_domain, seed, progress=False):
            names = [f"{sid}-{k}.png" for k in range(len(sample.images))]
            for name, image in zip(names, sample.images, strict=True):
                image.save(folder / name, format="PNG", optimize=True)
            record = sample.record() | {"id": sid, "images": names, "scene": sample.scene}
            record.pop("messages")
            lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
        (folder / SAMPLES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(folder / SAMPLES_FILE)
    return written


def validate_record(record: Any, where: str) -> None:
    """Raise ValueError naming `where` when a record lacks a field or has a wrong type or an unknown value."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{where}: record lacks field(s) {missing} (required: {list(REQUIRED_KEYS)})")
    for key in ("domain", "task", "question", "answer", "metric"):
        if not isinstance(record[key], str):
            raise ValueError(f"{where}: field {key!r} must be a string, got {type(record[key]).__name__}")
    if not isinstance(record["images"], list):
        raise ValueError(f"{where}: field 'images' must be a list, got {type(record['images']).__name__}")
    if record["metric"] not in METRIC_NAMES:
        raise ValueError(f"{where}: unknown metric {record['metric']!r}; known: {METRIC_NAMES}")
    if record["domain"] not in GENERATORS:
        raise ValueError(f"{where}: unknown domain {record['domain']!r}; known: {list(GENERATORS)}")


def load_jsonl(path: str | os.PathLike[str]) -> datasets.Dataset:
    """Load a samples.jsonl (image paths relative to the file) into an SFT-format dataset."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
        validate_record(record, where)
        images = []
        for name in record["images"]:
            file = path.parent / name
            if not file.is_file():
                raise FileNotFoundError(f"{where}: image file not found: {file}")
            with Image.open(file) as image:
                images.append(image.convert("RGB"))
        scene = record.get("scene", {})
        rows.append({
            "id": record.get("id", f"{path.parent.name}-{number}"), "domain": record["domain"],
            "task": record["task"], "lang": record.get("lang", "en"), "seed": record.get("seed"),
            "images": images, "question": record["question"], "answer": record["answer"],
            "messages": [user_message(record["question"], len(images)), assistant_message(record["answer"])],
            "rationale": record.get("rationale", ""), "options": record.get("options", []),
            "metric": record["metric"],
            "scene": scene if isinstance(scene, str) else json.dumps(scene, ensure_ascii=False, sort_keys=True),
        })
    if not rows:
        raise ValueError(f"{path}: no records")
    return datasets.Dataset.from_list(rows, features=FEATURES["sft"])


def load_data(path: str | os.PathLike[str]) -> datasets.Dataset:
    """Load a dataset from disk: a `save_to_disk` folder, a samples.jsonl, or a folder of `<domain>/samples.jsonl`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path does not exist: {path}")
    if path.is_file():
        return load_jsonl(path)
    if (path / "dataset_info.json").is_file():
        dataset = datasets.load_from_disk(str(path))
        missing = [k for k in REQUIRED_KEYS if k not in dataset.column_names]
        if missing:
            raise ValueError(f"{path}: dataset lacks column(s) {missing} (required: {list(REQUIRED_KEYS)})")
        return dataset
    if (path / SAMPLES_FILE).is_file():
        return load_jsonl(path / SAMPLES_FILE)
    files = sorted(path.glob(f"*/{SAMPLES_FILE}"))
    if not files:
        raise FileNotFoundError(f"{path}: no dataset here (expected dataset_info.json, {SAMPLES_FILE}, "
                                f"or <domain>/{SAMPLES_FILE})")
    return datasets.concatenate_datasets([load_jsonl(f) for f in files])
