"""Throughput and memory of a preset: training-step tokens/s, peak memory, generation tokens/s.

    python benchmarks/bench_model.py                      # nano on CPU
    python benchmarks/bench_model.py --device cuda --preset andesvl-1b --batch 4   # on a GPU

Figures are printed (and written as JSON with --out); nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch
from PIL import Image, ImageDraw

import andes_lib


def sample_batch(proc, batch: int, side: int):
    imgs, texts = [], []
    for i in range(batch):
        img = Image.new("RGB", (side, side), (230, 230, 230))
        ImageDraw.Draw(img).ellipse([side // 4, side // 4, 3 * side // 4, 3 * side // 4], fill=(40 * i % 255, 90, 200))
        imgs.append([img])
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the shape and its colour."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A blue circle in the middle of a grey square."}]}]
        texts.append(proc.apply_chat_template(msgs))
    enc = proc(images=imgs, text=texts, padding=True)
    enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (process peak RSS)


def bench_train(model, proc, device, batch: int, side: int, steps: int, warmup: int) -> dict:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    enc = {k: v.to(device) for k, v in sample_batch(proc, batch, side).items()}
    tokens = int(enc["attention_mask"].sum())
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(**enc).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"train_step_ms_median": round(1000 * med, 1), "train_tokens_per_step": tokens,
            "train_tokens_per_s": round(tokens / med, 1), "train_peak_memory_mb": round(peak_memory_mb(device), 1)}


@torch.no_grad()
def bench_generate(model, proc, device, side: int, new_tokens: int, repeats: int) -> dict:
    model.eval()
    img = Image.new("RGB", (side, side), (200, 40, 40))
    prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
                                      add_generation_prompt=True)
    enc = {k: v.to(device) for k, v in proc(images=[[img]], text=[prompt]).items()}
    model.generate(**enc, max_new_tokens=4, do_sample=False)  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append((out.shape[1] - enc["input_ids"].shape[1]) / (time.perf_counter() - t0))
    return {"generate_tokens_per_s_median": round(statistics.median(rates), 1), "generate_new_tokens": new_tokens,
            "prompt_tokens": int(enc["input_ids"].shape[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--side", type=int, default=96, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args()

    device = torch.device(args.device)
    model = andes_lib.build_model(args.preset, device=device) if args.preset != "smol" else andes_lib.build_model("smol").to(device)
    proc = andes_lib.build_processor(args.preset if args.preset in ("nano", "smol") else "nano")
    if args.preset not in ("nano", "smol"):  # paper sizes: nano's token ids are valid ids of the 151,936 vocabulary
        model.config.image_token_id = proc.image_token_id
    result = {"preset": args.preset, "device": str(device), "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(),
              "parameters": andes_lib.count_parameters(model)["total"], "batch": args.batch, "image_side": args.side}
    result.update(bench_generate(model, proc, device, args.side, args.new_tokens, args.repeats))
    result.update(bench_train(model, proc, device, args.batch, args.side, args.steps, args.warmup))
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
