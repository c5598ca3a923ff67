"""What the apps do besides drawing: find checkpoints, load one, check uploads, stream an answer, read samples."""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

import andes_lib
from andes_lib.processing.image import load_image
from andes_lib.processing.tokenizer import THINK_END, THINK_START

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data_samples"
RANDOM_NANO = "nano (random init)"
TRAINED = "nano-sft"  # the checkpoint preferred, and the one the app can build
MAX_UPLOAD_BYTES = 20 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGES = 8
RESCAN_S = 30


@dataclass(frozen=True)
class Settings:
    """Generation settings; temperature 0 means greedy decoding, top_k 0 means no top-k filter."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 50
    top_p: float = 1.0
    thinking: bool = False

    def generate_kwargs(self) -> dict:
        if self.temperature <= 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_k": self.top_k, "top_p": self.top_p}


@dataclass(frozen=True)
class Stats:
    """Measurements of one answer."""

    checkpoint: str
    latency_s: float
    first_text_s: float
    new_tokens: int
    visual_tokens: int
    images: int

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.latency_s if self.latency_s > 0 else 0.0

    def markdown(self) -> str:
        return (f"**{self.latency_s:.2f} s** · {self.tokens_per_s:.1f} tok/s · {self.new_tokens} new tokens · "
                f"{self.visual_tokens} visual tokens ({self.images} image{'s' * (self.images != 1)}) · "
                f"first text after {self.first_text_s:.2f} s · `{self.checkpoint}`")


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints on offer: label -> source ("nano" or a save_pretrained folder), and a notice to show."""

    sources: dict[str, str]
    notice: str

    @property
    def default(self) -> str:
        """A trained checkpoint when there is one (TRAINED first), else the random nano model."""
        trained = [k for k in self.sources if k != RANDOM_NANO]
        return TRAINED if TRAINED in trained else (trained[-1] if trained else RANDOM_NANO)


def scan_checkpoints(run_dir: str | Path | None = None, extra: str | Path | None = None) -> Checkpoints:
    """List the run directory's artifacts (the training module's cache), the folder `extra`, and the random nano.

    The import is retried on every scan, so the app switches to trained checkpoints once the module exists.
    """
    sources: dict[str, str] = {}
    notice = ""
    importlib.invalidate_caches()
    try:
        from andes_lib.train.artifacts import list_artifacts
        sources.update({name: str(path) for name, path in list_artifacts(run_dir or "").items()})
    except ImportError:
        notice = "the training module (`andes_lib.train`) is not available yet"
    except Exception as err:  # a broken run directory must not take the app down
        notice = f"could not list the run directory's checkpoints: {err}"
    if extra is not None and Path(extra).is_dir():
        sources[Path(extra).name] = str(extra)
    if not sources:
        reason = notice or f"no artifacts in {run_dir or 'the default run directory'}"
        notice = (f"**No trained checkpoint found** ({reason}): answering with the **randomly initialised nano "
                  f"model**, so answers are gibberish. Press **Get {TRAINED}** (from the artifact cache, or "
                  "trained: 10-20 min on 2 CPU cores) or run `andes-cookbook run --only 03 04`; the app re-checks "
                  f"every {RESCAN_S} s and switches over by itself.")
    sources[RANDOM_NANO] = "nano"
    return Checkpoints(sources, notice)


def build_trained(run_dir: str | Path | None = None) -> None:
    """Put TRAINED into the run directory: copied from the artifact cache, else trained (its whole chain)."""
    from andes_lib.train.artifacts import get_artifact
    get_artifact(TRAINED, run_dir or "")


def load_images(paths: Sequence[str | Path], max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_IMAGE_PIXELS) -> list[Image.Image]:
    """Open uploaded files as RGB images; raises ValueError with a message fit to show the user."""
    if len(paths) > MAX_IMAGES:
        raise ValueError(f"too many images: {len(paths)} (at most {MAX_IMAGES} per question)")
    images = []
    for path in map(Path, paths):
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{path.name}: file is too large ({size / 2**20:.1f} MiB, "
                             f"limit {max_bytes / 2**20:.0f} MiB)")
        try:
            images.append(load_image(path, max_pixels=max_pixels))
        except ValueError as err:
            raise ValueError(f"{path.name}: {err}") from err
    return images


def split_thinking(text: str, thinking: bool) -> tuple[str | None, str]:
    """(thought, answer) of a generated text; thought is None when there is no `<think>` part.

    In Thinking mode the prompt ends with `<think>`, so the text starts inside the thought; until `</think>`
    arrives everything is thought.
    """
    if not thinking:
        stripped = text.lstrip()
        if not stripped.startswith(THINK_START):
            return None, text.strip()
        text = stripped[len(THINK_START):]
    thought, _, answer = text.partition(THINK_END)
    return thought.strip(), answer.strip()


class _StopEvent(StoppingCriteria):
    """Stops generation when the event is set (the user left or the stream was closed)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class Engine:
    """One loaded model at a time, shared by all users; a lock makes loading and generation one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._source: str | None = None
        self._model = self._proc = None

    def is_loaded(self, source: str) -> bool:
        return self._source == source

    def _load(self, source: str) -> None:
        """Load `source` ("nano": random init, else a save_pretrained folder); call with the lock held."""
        if self._source == source:
            return
        if source == "nano":
            model, proc = andes_lib.build_model("nano"), andes_lib.build_processor("nano")
        else:
            from transformers import AutoModelForImageTextToText
            model = AutoModelForImageTextToText.from_pretrained(source)
            proc = andes_lib.AndesVLProcessor.from_pretrained(source)
        self._model, self._proc, self._source = model.eval(), proc, source

    def load(self, source: str) -> None:
        with self._lock:
            self._load(source)

    def stream(self, source: str, images: list[Image.Image], question: str,
               settings: Settings) -> Iterator[tuple[str, Stats | None]]:
        """Yield (text so far, None) as tokens arrive, then (full text, Stats) once generation ends.

        The text keeps `<think>`/`</think>` (see `split_thinking`) and drops the other special tokens.
        Raises ValueError for inputs the model cannot take (e.g. a prompt that is too long).
        """
        with self._lock:
            self._load(source)
            model, proc = self._model, self._proc
            content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
            prompt = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                              enable_thinking=settings.thinking)
            batch = proc(images=[images] if images else None, text=[prompt], return_tensors="pt")
            visual_tokens = int((batch["input_ids"] == proc.image_token_id).sum())
            drop = [t for t in proc.tokenizer.all_special_tokens if t not in (THINK_START, THINK_END)]
            streamer = TextIteratorStreamer(proc.tokenizer, skip_prompt=True, skip_special_tokens=False)
            stop, result = threading.Event(), {}

            def run() -> None:
                try:
                    with torch.inference_mode():
                        result["ids"] = model.generate(**batch, **settings.generate_kwargs(), streamer=streamer,
                                                       stopping_criteria=StoppingCriteriaList([_StopEvent(stop)]))
                except Exception as err:  # re-raised below; ending the stream unblocks the reader
                    result["error"] = err
                    streamer.end()

            start = time.perf_counter()
            first = None
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            text = ""
            try:
                for piece in streamer:
                    first = first or time.perf_counter()
                    text += piece
                    for token in drop:
                        text = text.replace(token, "")
                    yield text, None
            finally:
                stop.set()
                worker.join()
            if "error" in result:
                raise result["error"]
            latency = time.perf_counter() - start
            new_tokens = result["ids"].shape[1] - batch["input_ids"].shape[1]
            label = RANDOM_NANO if source == "nano" else Path(source).name
            yield text, Stats(label, latency, (first or time.perf_counter()) - start, new_tokens, visual_tokens,
                              len(images))


@dataclass(frozen=True)
class Sample:
    """One example question from data_samples/<domain>/samples.jsonl."""

    domain: str
    question: str
    images: tuple[Path, ...]
    answer: str
    lang: str


def load_samples(root: str | Path = SAMPLES_DIR, per_domain: int = 2) -> list[Sample]:
    """Up to `per_domain` samples with images per domain (one per language first); [] when nothing is there."""
    samples = []
    for jsonl in sorted(Path(root).glob("*/samples.jsonl")):
        rows = []
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                images = tuple(jsonl.parent / name for name in row["images"])
                sample = Sample(jsonl.parent.name, row["question"], images, str(row.get("answer", "")),
                                row.get("lang", "en"))
            except (ValueError, KeyError, TypeError):
                continue
            if images and all(p.is_file() for p in images):
                rows.append(sample)
        picked: list[Sample] = []
        for sample in rows:  # the first sample of each language, then the next ones
            if sample.lang not in {p.lang for p in picked}:
                picked.append(sample)
        samples.extend((picked + [s for s in rows if s not in picked])[:per_domain])
    return samples
