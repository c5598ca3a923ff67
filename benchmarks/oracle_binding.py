"""Oracle bisection: can the project's own language side learn the visual lookup when the features are perfect?

The project's processor, chat template, `collate` (assistant-only labels), data and nano LLM, but every visual row
is replaced by a trainable embedding `E_shape[s] + E_colour[c]` of the object under that visual token (its most
common 2x2-patch label, from `collate_patch_labels`; background otherwise). Only the language side is tested: if
this fails, no vision encoder can fix the pipeline. Each flag is one difference between this pipeline and the
standalone simulation that learns (`shared/experiments/binding_sim.py`); `03_pretraining` records what each did.

    python benchmarks/oracle_binding.py --batch 64 --steps 150 --rms 1 --weighting sample
    python benchmarks/oracle_binding.py --real runs/<ts>/artifacts/nano-vision    # real features, frozen tower

Held-out accuracy is the teacher-forced first answer token, per `domain/task` (100 test items per domain).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

import andes_lib
from andes_lib.data import build_dataset
from andes_lib.data.base import assistant_message, user_message
from andes_lib.data.general_vqa import absent
from andes_lib.data.render import COLOURS, SHAPES
from andes_lib.train.collate import IGNORE_INDEX, collate
from andes_lib.train.loss import token_weights
from andes_lib.train.patch_labels import collate_patch_labels, load_labeler
from andes_lib.train.probe import token_labels

PROBE_TASKS = ("hallucination/object", "hallucination/attribute", "general_vqa/color", "general_vqa/shape", "absent",
               "general_vqa/relation")
MAX_GRID = 16  # visual tokens per side the position embeddings cover


def parse_mix(text: str) -> dict[str, float]:
    """'hallucination:1,general_vqa/color:2' -> {source: weight}."""
    out = {}
    for part in text.split(","):
        key, _, weight = part.partition(":")
        out[key.strip()] = float(weight or 1)
    return out


def absent_lookup(row: dict) -> dict | None:
    """A POPE object scene asked as a look-up: "What colour is the star?" -> its colour, or "There is no star."."""
    scene = json.loads(row["scene"])
    shape = scene["query"]["shape"]
    colours = {o["colour"] for o in scene["objects"] if o["shape"] == shape}
    if len(colours) > 1:
        return None
    question = f"What colour is the {shape}?"
    answer = colours.pop() if colours else absent(shape)
    messages = [user_message(question, 1), assistant_message(answer)]
    return {**row, "task": "absent", "question": question, "answer": answer, "messages": messages}


def dense_turns(row: dict, rng: random.Random, turns: int = 6) -> dict:
    """A POPE scene as one conversation of several questions: presence of shapes (present and absent), colour
    look-ups (or "There is no X.") and one shape-and-colour presence question, shuffled."""
    scene = json.loads(row["scene"])
    objects = scene["objects"]
    present = sorted({o["shape"] for o in objects})
    missing = rng.sample([sh for sh in SHAPES if sh not in present], len(present))  # presence questions: balanced
    qa = [(f"Is there a {sh} in the image?", "yes" if sh in present else "no") for sh in present + missing]
    for sh in (rng.choice(present), rng.choice(missing)):
        colours = {o["colour"] for o in objects if o["shape"] == sh}
        if len(colours) <= 1:
            qa.append((f"What colour is the {sh}?", colours.pop() if colours else absent(sh)))
    o = rng.choice(objects)
    colour = o["colour"] if rng.random() < 0.5 else rng.choice(sorted(COLOURS))
    hit = any(x["shape"] == o["shape"] and x["colour"] == colour for x in objects)
    qa.append((f"Is there a {colour} {o['shape']} in the image?", "yes" if hit else "no"))
    rng.shuffle(qa)
    messages = []
    for k, (q, ans) in enumerate(qa[:turns]):
        messages += [user_message(q, 1 if k == 0 else 0), assistant_message(ans)]
    return {**row, "task": "dense", "messages": messages}


def pools(mix: dict[str, float], split: str, n: int) -> dict[str, list[dict]]:
    out = {}
    for key in mix:
        if key == "absent":  # not a generator: POPE object scenes asked as colour look-ups
            ds = build_dataset(split, ["hallucination"], n, progress=False)
            out[key] = [r for r in (absent_lookup(ds[i]) for i in range(len(ds)) if ds[i]["task"] == "object") if r]
            continue
        if key == "dense":  # not a generator: POPE scenes as six-question conversations
            ds, rng = build_dataset(split, ["hallucination"], n, progress=False), random.Random(split)
            out[key] = [dense_turns(ds[i], rng) for i in range(len(ds))]
            continue
        domain, _, task = key.partition("/")
        ds = build_dataset(split, [domain], n, progress=False)
        out[key] = [ds[i] for i in range(len(ds)) if not task or ds[i]["task"] == task]
    return out


def run(a: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(a.seed)
    if a.init == "fresh":
        model, proc = andes_lib.build_model("nano", seed=a.seed), andes_lib.build_processor("nano")
    else:
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained(a.init, dtype=torch.float32)
        proc = andes_lib.AndesVLProcessor.from_pretrained(a.init)
    hidden = model.config.text_config.hidden_size
    params = list(model.model.language_model.parameters())
    current: dict[str, torch.Tensor] = {}
    if a.real:
        model.model.vision_tower.requires_grad_(False)
        model.model.projector.requires_grad_(a.projector_lr != 0)
        params += list(model.model.projector.parameters()) if a.projector_lr != 0 else []
    else:
        e_shape, e_colour = torch.nn.Embedding(7, hidden), torch.nn.Embedding(7, hidden)
        for e in (e_shape, e_colour):
            torch.nn.init.normal_(e.weight, std=a.std)
        params += list(e_shape.parameters()) + list(e_colour.parameters())
        model.model.get_image_features = lambda pixel_values, grid: e_shape(current["s"]) + e_colour(current["c"])
    if a.pos:  # each visual row also says where its token is: row and column embeddings, added after the rows
        e_row, e_col = torch.nn.Embedding(MAX_GRID, hidden), torch.nn.Embedding(MAX_GRID, hidden)
        if a.pos_kind == "learned":
            for e in (e_row, e_col):
                torch.nn.init.normal_(e.weight, std=a.pos)
            params += list(e_row.parameters()) + list(e_col.parameters())
        else:  # "ramp": fixed, linear in the index along one random direction per axis (-pos .. +pos over 6 tokens)
            g = torch.Generator().manual_seed(a.seed + 1)
            ramp = (torch.arange(MAX_GRID, dtype=torch.float32) - 2.5) / 2.5
            for e in (e_row, e_col):
                e.weight.data = a.pos * ramp[:, None] * torch.randn(hidden, generator=g)[None]
                e.requires_grad_(False)
        rows_only = model.model.get_image_features
        model.model.get_image_features = lambda pv, grid: rows_only(pv, grid) + e_row(current["row"]) + e_col(
            current["col"])
    if a.rms:  # rows normalised to a fixed RMS (what `projector_rms` does in the model)
        raw = model.model.get_image_features
        model.model.get_image_features = lambda pv, grid: a.rms * torch.nn.functional.rms_norm(
            raw(pv, grid), (hidden,))
    proj = {id(p) for p in model.model.projector.parameters()}
    groups = [{"params": [p for p in params if id(p) not in proj], "peak": a.lr},
              {"params": [p for p in params if id(p) in proj], "peak": a.lr if a.projector_lr < 0 else a.projector_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01)
    mix = parse_mix(a.mix)
    train, test = pools(mix, "train", a.n_train), pools(parse_mix(",".join(PROBE_TASKS)), "test", 100)
    names, weights = list(mix), [mix[k] for k in mix]

    labeler = load_labeler(a.labeler)[0] if a.labeler else None

    def prep(rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate(proc, rows, "assistant")
        if a.pos:  # raster order over each image's (h/2, w/2) token grid
            grid = batch["image_grid_hw"] // 2  # pixel shuffle merges 2x2 patches
            if int(grid.max()) > MAX_GRID:
                raise ValueError(f"--pos covers {MAX_GRID} visual tokens per side; an image here has a "
                                 f"{tuple(grid.max(0).values.tolist())} token grid")
            current["row"] = torch.cat([torch.arange(h).repeat_interleave(w) for h, w in grid.tolist()])
            current["col"] = torch.cat([torch.arange(w).repeat(h) for h, w in grid.tolist()])
        if not a.real:
            labels = collate_patch_labels(proc, rows)
            if labeler is not None:  # the vision stage's own predictions stand in for the ground truth
                with torch.no_grad():
                    s_logits, c_logits, *_ = labeler(labels["pixel_values"], labels["image_grid_hw"])
                labels = {"shape_labels": s_logits.argmax(-1), "colour_labels": c_logits.argmax(-1)}
            current["s"], current["c"], _ = token_labels(labels)
        return batch

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        acc = {}
        for key, rows in test.items():
            hits = []
            for i in range(0, len(rows), 50):
                batch = prep(rows[i:i + 50])
                labels = batch.pop("labels")
                logits = model(**batch).logits
                for k in range(len(labels)):
                    pos = (labels[k] != IGNORE_INDEX).nonzero()[0].item()
                    hits.append(int(logits[k, pos - 1].argmax() == labels[k, pos]))
            acc[key] = round(sum(hits) / len(hits), 3)
        model.train()
        return acc

    rng, t0, result = random.Random(a.seed), time.time(), {}
    model.train()
    for step in range(1, a.steps + 1):
        for g in opt.param_groups:
            g["lr"] = g["peak"] * min(1.0, step / 20)
        rows = []
        for _ in range(a.batch):
            pool = train[rng.choices(names, weights)[0]]
            rows.append(pool[rng.randrange(len(pool))])
        batch = prep(rows)
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1]
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none",
                                                ignore_index=IGNORE_INDEX).view_as(target)
        w = token_weights(target, a.weighting)
        loss = (nll * w).sum() / w.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if step % a.every == 0 or step == a.steps:
            result = evaluate()
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s {result}", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default="fresh", help="'fresh' or a checkpoint folder (e.g. a nano-llm artifact)")
    p.add_argument("--real", action="store_true", help="the real (frozen) vision tower + trainable projector")
    p.add_argument("--labeler", default="", help="oracle rows indexed by this vision artifact's predicted labels")
    p.add_argument("--mix", default="hallucination:1,general_vqa:1",
                   help="source:weight,... (domain, domain/task; 'absent': POPE object scenes asked as colour "
                        "look-ups that answer 'There is no <shape>.' when it is absent; 'dense': POPE scenes as "
                        "six-question conversations)")
    p.add_argument("--n-train", type=int, default=1000, help="training items per domain")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--projector-lr", type=float, default=-1.0, help="--real: the projector's rate (0: frozen; -1: --lr)")
    p.add_argument("--std", type=float, default=0.02, help="init std of the oracle embeddings (their scale)")
    p.add_argument("--pos", type=float, default=0.0,
                   help="add trainable row and column embeddings of this init std to the visual rows (0: none)")
    p.add_argument("--pos-kind", default="learned", choices=["learned", "ramp"],
                   help="--pos as trainable embeddings, or as fixed codes linear in the row and column")
    p.add_argument("--rms", type=float, default=0.0, help="normalise visual rows to this RMS (0: leave them)")
    p.add_argument("--weighting", default="token", choices=["token", "sample", "square"])
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="append the final accuracies and the flags to this JSONL file")
    a = p.parse_args()
    result = run(a)
    if a.json:
        with open(a.json, "a", encoding="utf-8") as f:
            f.write(json.dumps({"flags": vars(a), "accuracy": result}) + "\n")


if __name__ == "__main__":
    main()
