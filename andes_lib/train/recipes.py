"""Stage recipes: what trains, on which data, how fast, for how long (ANDESVL.md §2, SPEC §3).

A `StageRecipe` is a frozen dataclass holding every parameter that changes the result of a stage. Its
`params_hash` covers those parameters only; its `fingerprint` also covers the parent stage's fingerprint,
the data generators' source and the tokenizer, so a checkpoint built from other inputs is never reused
silently (`andes_lib.train.artifacts` checks it).

The `nano` chain (CPU-sized) follows the paper's pipeline, with two extra stages in front:

| stage | trains | data | why |
|---|---|---|---|
| `llm` | LLM | text only | stands in for the pre-trained Qwen3 (nano's LLM is random) |
| `vision` | vision tower (+ a head), projector | scenes of shapes | stands in for the pre-trained SigLIP2/AIMv2 (`patch_labels`: shape, colour and, on text, character per patch); the projector learns to send each object as a fixed code |
| `pt1` | projector | dense captions, OCR | alignment: the LLM is frozen, the projector learns to speak it |
| `pt2` | projector, LLM | look-up led image-text + 5% text | joint pre-training; the LLM learns to bind words to visual tokens |
| `pt3` | projector, LLM | all domains led by presence (POPE), long samples | multi-task pre-training, longer sequences (GUI, multi-image); presence is learned here, after pt2's look-ups |
| `sft` | projector, LLM | all domains | instruction tuning, loss on assistant tokens only |

Learning rates: the from-scratch vision tower needs a small one. `benchmarks/probe_lr.py` (one shape on a plain
background, "What colour is the shape?", batch 16, from `nano-llm`, 64 held-out items) measured after 60 steps:
vision+projector / LLM at 3e-4 / 3e-4: 100%; 3e-4 / 1e-3: 88%; 1e-3 / 3e-4: 53%; 1e-3 / 1e-3: 42%.
Hence vision <= 3e-4 in every language-model stage. The `vision` stage is the exception: a dense per-patch loss with
no LLM in the loop. There, on hallucination scenes at batch 16, patch-level shape accuracy after 500 steps was 96%
at 1e-3 and 59% at 3e-4; hence 1e-3. After `vision` the projector's rows carry each object as a code (92% of the
variance of object tokens); pt1 at 1e-3 cut that to 66%, so pt1 and pt2 move the projector gently (2e-4, 1e-4) and
pt2's budget goes to the LLM, which binds more slowly from `nano-llm` than from scratch (`03` section 7).

Optimizer: the stages that train the LLM on images (pt2, pt3, SFT) use Muon on its decoder matrices and AdamW on the
rest (`train.optim`). With AdamW and everything else equal, the chain ended at POPE 79.0 / general VQA 73.0 / margin over
blind 20.9; with Muon at 94.0 / 78.4 / 25.5, at the same cost per step; with Muon, the projector's place code and
relations at 2.5 in pt2, at 89.0 / 92.2 / 30.6 (`03` section 7, round 6).

Micro-batches: pt2, pt3 and SFT split each step into two micro-batches of rows sorted by length (`grad_accum=2`). The
loss is normalised over the whole step, so the gradient is the one of the full batch; the padding is less. pt3 and SFT
also pack each micro-batch's samples into rows of `max_seq_len` tokens (`pack=True`, `collate.pack_rows`): the same
samples and gradient, a quarter fewer tokens. Forward and backward of one step on a 2-core AMX CPU
(`benchmarks/bench_microbatch.py`, 4 steps each, gradients equal to 5e-6 of their largest entry): pt3 1.57 s as one
padded batch, 1.27 s as two micro-batches (31168 -> 23584 tokens for 17727 real ones), 1.20 s packed (19200); SFT 0.73,
0.65, 0.60 s; pt2 0.74 -> 0.65 s with two micro-batches, packing it (rows of 128 tokens) pads more, not less.
`03` + `04`: 1395 s before micro-batches, 1273 s with them, 1146 s with packing and the vision tower's contiguous
attention (`03` section 7, rounds 7 and 8).

Precision and the frozen tower (`03` section 7, round 9; a 2-core AMD EPYC without AMX, 2026-12-05): pt2, pt3 and SFT
train under bf16 autocast with Muon's iterations in bf16 (`precision="bf16"`; weights, optimizer state and checkpoints
stay fp32), and a stage that does not train the vision tower computes its features once per image
(`train.feature_cache`): a pt2 step 1.13 s -> 0.93 s (cache) -> 0.70 s (bf16). The tower also stays frozen in pt3 and
SFT (the paper trains it there; nano's tower is the `vision` stage's stand-in, and training it on further changed
nothing measurable: the margin over max(blind, chance) on 300 validation questions per domain was 22.1 with it, 22.6
without) at 157 s instead of 255 s for pt3 and 182 s instead of 310 s for SFT; the time went into steps: pt3 250 and
SFT 450 instead of 150 and 300 took that margin to 26.1, POPE questions to 93%.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .loss import WEIGHTINGS

MODULE_GROUPS: tuple[str, ...] = ("vision_tower", "projector", "language_model")
LOSS_ON: tuple[str, ...] = ("all", "assistant")
OBJECTIVES: tuple[str, ...] = ("lm", "patch_labels")
OPTIMIZERS: tuple[str, ...] = ("adamw", "muon")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@dataclass(frozen=True)
class StageRecipe:
    """One training stage. Learning rates are per module group; a group absent from `lr` is frozen.

    data: visual domain -> sampling weight (any of `andes_lib.data.DOMAINS`, optionally `"domain/task"` to keep
    only some tasks); `text_only`: share of the stream drawn from text-only data (the `text_only` domain and,
    when `text_corpus` > 0, plain texts of `corpus_texts()`).
    """

    name: str
    preset: str = "nano"
    parent: str | None = None  # name of the stage whose final checkpoint this one starts from
    lr: dict[str, float] = field(default_factory=dict)  # module group -> peak learning rate
    data: dict[str, float] = field(default_factory=dict)
    text_only: float = 0.0
    text_corpus: int = 0  # plain texts from corpus_texts(n_per_domain=text_corpus) added to the text-only pool
    n_per_domain: int = 1000  # training pool per domain (andes_lib.data.build_dataset("train", ...))
    data_seed: int = 0
    max_seq_len: int = 160  # longer image samples are skipped, longer text-only samples truncated
    loss_on: str = "all"  # "all" text tokens (pre-training) or "assistant" tokens only (SFT)
    loss_weighting: str = "token"  # mean over "token"s, over "sample"s, or InternVL2.5's "square" (train.loss)
    objective: str = "lm"  # "lm" (next-token loss) or "patch_labels" (the vision tower alone, train.patch_labels)
    code_weight: float = 0.0  # patch_labels: weight of pulling the projector's rows onto their objects' codes
    steps: int = 100
    batch_size: int = 8  # global batch per optimizer step (split over processes)
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    pack: bool = False  # pack each micro-batch's samples into rows of max_seq_len tokens (collate.pack_rows)
    warmup_steps: int = 10
    schedule: str = "cosine"  # "cosine" or "constant" after the linear warm-up
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    optimizer: str = "adamw"  # "adamw", or "muon": Muon on the LLM's decoder matrices, AdamW on the rest (train.optim)
    place_code: bool = True  # False: this stage trains without the projector's place code (pt1, where the LLM is frozen)
    precision: str = "fp32"  # "bf16": forward and backward under bf16 autocast, Muon's iterations in bf16 (weights fp32)
    max_grad_norm: float = 1.0
    seed: int = 0  # model init (first stage), data order and dropout
    save_every: int = 0  # checkpoint every N steps (0: only the final one)
    keep_last: int = 2
    description: str = ""

    def __post_init__(self) -> None:
        bad = sorted(set(self.lr) - set(MODULE_GROUPS))
        if bad:
            raise ValueError(f"recipe {self.name!r}: unknown module group(s) {bad}; known: {list(MODULE_GROUPS)}")
        if not self.lr:
            raise ValueError(f"recipe {self.name!r}: nothing trains (lr is empty)")
        if any(v <= 0 for v in self.lr.values()):
            raise ValueError(f"recipe {self.name!r}: learning rates must be > 0 (leave a group out to freeze it)")
        if self.loss_on not in LOSS_ON:
            raise ValueError(f"recipe {self.name!r}: loss_on must be one of {LOSS_ON}, got {self.loss_on!r}")
        if self.loss_weighting not in WEIGHTINGS:
            raise ValueError(f"recipe {self.name!r}: loss_weighting must be one of {WEIGHTINGS}, "
                             f"got {self.loss_weighting!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"recipe {self.name!r}: objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "patch_labels" and ("vision_tower" not in self.lr or "language_model" in self.lr
                                                 or self.text_only):
            raise ValueError(f"recipe {self.name!r}: a patch_labels stage trains the vision tower (and at most the "
                             "projector) on scenes of shapes: lr must have 'vision_tower', no 'language_model', "
                             "and text_only 0")
        if self.code_weight < 0 or (self.code_weight and (self.objective != "patch_labels"
                                                          or "projector" not in self.lr)):
            raise ValueError(f"recipe {self.name!r}: code_weight must be >= 0; only a patch_labels stage that "
                             "trains the projector has one")
        for key in ("place_code", "pack"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"recipe {self.name!r}: {key} must be True or False, got {getattr(self, key)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"recipe {self.name!r}: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"recipe {self.name!r}: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"recipe {self.name!r}: schedule must be 'cosine' or 'constant'")
        if not 0.0 <= self.text_only <= 1.0:
            raise ValueError(f"recipe {self.name!r}: text_only must be a share in [0, 1], got {self.text_only}")
        if self.text_only < 1.0 and not self.data:
            raise ValueError(f"recipe {self.name!r}: no image-text data (data is empty) and text_only < 1")
        if any(w < 0 for w in self.data.values()) or (self.data and sum(self.data.values()) <= 0):
            raise ValueError(f"recipe {self.name!r}: data weights must be >= 0 with a positive sum")
        for key, value in {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                           "n_per_domain": self.n_per_domain, "max_seq_len": self.max_seq_len}.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"recipe {self.name!r}: {key} must be a positive int, got {value!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"recipe {self.name!r}: batch_size {self.batch_size} is not divisible by "
                             f"grad_accum {self.grad_accum}")
        if self.keep_last < 1:
            raise ValueError(f"recipe {self.name!r}: keep_last must be >= 1")

    # ------------------------------------------------------------------ identity
    @property
    def artifact(self) -> str:
        """The artifact name, e.g. `nano-sft`."""
        return f"{self.preset}-{self.name}"

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(g for g in MODULE_GROUPS if g in self.lr)

    @property
    def frozen(self) -> tuple[str, ...]:
        return tuple(g for g in MODULE_GROUPS if g not in self.lr)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecipe:
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def params_hash(self) -> str:
        """Hash of this recipe's parameters (not the description, not the checkpoint cadence)."""
        params = {k: v for k, v in self.to_dict().items() if k not in ("description", "save_every", "keep_last")}
        return _digest(params)

    def replace(self, **changes: Any) -> StageRecipe:
        """A copy with some parameters changed (e.g. fewer steps for a smoke test)."""
        return dataclasses.replace(self, **changes)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def _file_digest(path: str, mtime: float) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


CODE_FILES = ("train/loop.py", "train/feature_cache.py", "train/collate.py", "train/stream.py", "train/patch_labels.py",
              "train/loss.py", "train/optim.py", "model/*.py", "processing/*.py", "config.py", "presets.py")


def code_hash() -> str:
    """Hash of the code that shapes a trained model: the training loop, the model and the processor."""
    root = Path(__file__).resolve().parents[1]
    files = sorted({p for pattern in CODE_FILES for p in root.glob(pattern)})
    return _digest({p.relative_to(root).as_posix(): _file_digest(str(p), p.stat().st_mtime) for p in files})


def inputs_hash(preset: str) -> str:
    """Hash of what a recipe consumes besides its parameters: data generators, tokenizer, training/model code."""
    from ..data.dataset import source_hash

    parts = {"data": source_hash(), "code": code_hash()}
    if preset == "nano":
        from ..processing.tokenizer import TOKENIZER_DIR

        tok = TOKENIZER_DIR / "tokenizer.json"
        parts["tokenizer"] = _file_digest(str(tok), tok.stat().st_mtime) if tok.is_file() else "missing"
    return _digest(parts)


def fingerprint(recipe: StageRecipe, recipes: dict[str, StageRecipe] | None = None) -> str:
    """Identity of a stage's result: its parameters, its inputs, and (recursively) its parent's fingerprint."""
    recipes = RECIPES if recipes is None else recipes
    parent = parent_of(recipe, recipes)
    parent = fingerprint(parent, recipes) if parent else None
    return _digest({"params": recipe.params_hash(), "inputs": inputs_hash(recipe.preset), "parent": parent})


# ---------------------------------------------------------------------- nano recipes
ALL_DOMAINS = {"text_rich": 1.0, "chart": 1.0, "reasoning": 1.0, "multi_image": 1.0, "general_vqa": 1.0,
               "hallucination": 1.0, "multilingual": 1.0, "gui": 1.0}

# pt2's mix: led by look-up questions (benchmarks/oracle_binding.py, `03` §7: with these the LLM binds words to visual
# tokens in ~100 steps at batch 64; with captions, relations and sizes at equal weight, colour-of-shape was still at
# 0.5 after 100 steps, and with none of them general VQA ended 18 points lower after SFT); the colour questions
# include absent shapes ("There is no star."), which teach absence as a look-up. Presence is learned last, so the
# rate stays constant after warm-up. With half these shape, attribute, caption and relation weights, presence was
# not learned at all in the real pipeline (yes-minus-no AUC 0.49 after pt2, against 0.82 with these in one run; a
# later run of the same recipe reached only 0.57, so pt3 now leads with presence). Relations (left/right/above/below)
# weigh 2.5: with AdamW and no place code in the rows that cost presence (object POPE 0.54 after pt2 against 0.77);
# with Muon and the projector's place code they reach 86% after pt2 and presence comes back in pt3 (`03` section 7).
BINDING_MIX = {"general_vqa/color": 3.0, "general_vqa/shape": 2.0, "hallucination/object": 2.0,
               "hallucination/attribute": 1.5, "general_vqa/caption": 1.0, "general_vqa/relation": 2.5,
               "general_vqa/size": 0.5}

# pt3's mix: all domains, led by presence (`03` section 7, round 5). Presence is learned after the look-ups, not beside
# them: mixed into pt2 (even at 29% of the batch, without attribute questions) it was not learned in 400 or 800 steps
# (yes-minus-no AUC 0.48-0.57); after pt2, 200 steps of object POPE 2 : colour 1 at batch 64 took it to 0.80, and
# the same with attribute questions at a quarter of the mix stayed at 0.52 (a "no" over a star of another colour
# contradicts the "a star is there -> yes" signal presence is learned from). Here object questions lead 2 : 1.
PRESENCE_LED = {**{d: w for d, w in ALL_DOMAINS.items() if d != "hallucination"}, "general_vqa": 2.0,
                "hallucination/object": 4.0, "hallucination/attribute": 2.0}

# SFT's mix: every domain, presence and its attribute lures weighted up, and the two-image comparisons ("Do the two
# images show the same shape?", "Which image is different?") at 1.0 each on top of their domain's share. Chosen on the
# validation split (300 per domain, 7-domain margin over blind; `benchmarks/sft_mix.py`) among SFT-only variants from
# the same pt3 (2026-12-04, AMX CPU): without them 26.5; + `same` 29.3; + `same` and `odd` 29.5 (test, 300 per domain:
# 27.6 -> 29.4); + `same` and `changed` 27.5; + `same`, `odd`, `changed` and the Chinese colour/shape questions 29.0.
# `same` goes from 59% to 92-96% in every variant (nano names shapes at 100% in general VQA but had too few examples
# to learn to compare two images); `odd` (three images) stays at chance at this weight.
SFT_MIX = {**ALL_DOMAINS, "general_vqa": 1.5, "hallucination": 3.0, "hallucination/attribute": 2.0,
           "multi_image/same": 1.0, "multi_image/odd": 1.0}

NANO_RECIPES: tuple[StageRecipe, ...] = (
    StageRecipe(
        name="llm", lr={"language_model": 2e-3}, data={}, text_only=1.0, text_corpus=2000,
        max_seq_len=96, steps=150, batch_size=32, warmup_steps=15,
        description="Stand-in for the pre-trained Qwen3: the random nano LLM learns the text of all domains.",
    ),
    StageRecipe(
        name="vision", parent="llm", objective="patch_labels", code_weight=1.0,
        lr={"vision_tower": 1e-3, "projector": 1e-3},
        data={"general_vqa": 1.0, "hallucination": 2.0, "multi_image": 1.0}, max_seq_len=192, steps=800,
        batch_size=16, warmup_steps=20,
        description="Stand-in for the pre-trained SigLIP2/AIMv2 encoder: the random vision tower learns to label "
                    "every patch with the shape and colour under it, and the projector learns to send each object "
                    "as a fixed code (what a semantic encoder's features give the LLM). Text images in `data` also "
                    "teach it to read (a character label per patch); `03` section 7 measures what that costs.",
    ),
    StageRecipe(
        name="pt1", parent="vision", lr={"projector": 2e-4},
        data={"general_vqa/caption": 3.0, "text_rich/sign": 1.0, "multilingual/read": 1.0},
        max_seq_len=128, steps=80, batch_size=32, warmup_steps=10, loss_weighting="sample", place_code=False,
        description="Vision-language alignment: LLM and vision tower frozen; the projector learns to turn the "
                    "encoder's features into tokens the LLM reads (captions, OCR). Without the place code, which "
                    "the frozen LLM cannot learn to read (with it here, POPE after SFT fell from 89 to 72).",
    ),
    StageRecipe(
        name="pt2", parent="pt1", lr={"projector": 1e-4, "language_model": 1e-3},
        data=BINDING_MIX, text_only=0.05, n_per_domain=2000, max_seq_len=128, steps=400, batch_size=64,
        grad_accum=2, warmup_steps=20, schedule="constant", loss_weighting="sample", optimizer="muon", precision="bf16",
        description="Joint pre-training: LLM and projector train on look-up questions (colour of a named shape, "
                    "shape of a named colour, presence) that teach the LLM to bind a word to visual tokens, plus 5% "
                    "text-only.",
    ),
    StageRecipe(
        name="pt3", parent="pt2", lr={"projector": 3e-4, "language_model": 1e-3},
        data=PRESENCE_LED, text_only=0.05, max_seq_len=192, steps=250, batch_size=64, grad_accum=2, pack=True,
        warmup_steps=10, schedule="constant", loss_weighting="sample", optimizer="muon", precision="bf16",
        description="Multi-task pre-training: all domains, longer sequences (GUI screens, several images), led by "
                    "presence questions (POPE), which the LLM learns only once pt2's look-ups are in place.",
    ),
    StageRecipe(
        name="sft", parent="pt3", lr={"projector": 2e-4, "language_model": 3e-4},
        data=SFT_MIX, text_only=0.05, loss_on="assistant", max_seq_len=192, steps=450, batch_size=32, grad_accum=2,
        pack=True, warmup_steps=15,
        data_seed=1, loss_weighting="sample", optimizer="muon", precision="bf16",
        description="Supervised fine-tuning on instruction conversations; loss on assistant tokens only. Attribute "
                    "questions (a lure of another colour) get extra weight: once presence exists, the yes-bias "
                    "is a matter of the SFT mix. Two-image comparisons get extra weight too (`SFT_MIX`).",
    ),
)
# ---------------------------------------------------------------------- smol recipes
# `smol` pairs the real, pre-trained SmolLM2-135M-Instruct with a fresh nano-sized vision tower: the paper's starting
# point (a pre-trained LLM that already reads and binds words), at a size a single GPU trains in minutes. There is no
# `llm` stage, and the LLM learns at pre-trained-model rates with AdamW, the optimizer it was pre-trained with. Same stages and data as nano; the learning rates are
# the usual LLaVA-style choices, not tuned here: on 2 CPU cores a smol step costs about 19x a nano step
# (`benchmarks/bench_model.py --preset smol --batch 16`), so this chain is meant for a GPU
# (`python -m andes_lib.train smol-sft`).
SMOL_LR = {
    "pt1": {"vision_tower": 3e-4, "projector": 1e-3},
    "pt2": {"vision_tower": 1e-4, "projector": 2e-4, "language_model": 2e-5},
    "pt3": {"vision_tower": 1e-4, "projector": 2e-4, "language_model": 2e-5},
    "sft": {"vision_tower": 5e-5, "projector": 1e-4, "language_model": 1e-5},
}
SMOL_RECIPES: tuple[StageRecipe, ...] = tuple(
    r.replace(preset="smol", parent=None if r.name == "vision" else r.parent, lr=SMOL_LR.get(r.name, r.lr),
              optimizer="adamw",
              description=r.description.replace("random vision tower", "fresh vision tower"))
    for r in NANO_RECIPES if r.name != "llm"
)

RECIPES: dict[str, StageRecipe] = {r.artifact: r for r in NANO_RECIPES + SMOL_RECIPES}


def get_recipe(name: str, recipes: dict[str, StageRecipe] | None = None) -> StageRecipe:
    """A recipe by artifact name (`nano-sft`) or, for nano, by stage name (`sft`)."""
    return resolve(name, RECIPES if recipes is None else recipes)


def resolve(name: str, recipes: dict[str, StageRecipe]) -> StageRecipe:
    if name in recipes:
        return recipes[name]
    matches = [r for r in recipes.values() if r.name == name]
    if len(matches) > 1:  # a bare stage name means the nano one
        matches = [r for r in matches if r.preset == "nano"]
    if len(matches) == 1:
        return matches[0]
    raise KeyError(f"unknown stage {name!r}; known: {sorted(recipes)}")


def chain(name: str, recipes: dict[str, StageRecipe] | None = None) -> list[StageRecipe]:
    """The stages that lead to `name`, first stage first (e.g. llm, pt1, pt2, pt3, sft)."""
    recipes = RECIPES if recipes is None else recipes
    out, seen = [], set()
    recipe: StageRecipe | None = resolve(name, recipes)
    while recipe is not None:
        if recipe.artifact in seen:
            raise ValueError(f"recipe chain has a cycle at {recipe.artifact}")
        seen.add(recipe.artifact)
        out.append(recipe)
        recipe = parent_of(recipe, recipes)
    return out[::-1]


def parent_of(recipe: StageRecipe, recipes: dict[str, StageRecipe]) -> StageRecipe | None:
    """The parent recipe (looked up as `<preset>-<parent>` first, then by name), or None for a first stage."""
    if not recipe.parent:
        return None
    own = f"{recipe.preset}-{recipe.parent}"
    return recipes[own] if own in recipes else resolve(recipe.parent, recipes)
