"""Batch-1 decode of SmolLM2-135M against this machine's memory roofline, every setting side by side in one run.

    python benchmarks/bench_decode.py                       # threads 1 and 2, 128-token prompt, 32 steps
    python benchmarks/bench_decode.py --threads 2 --out decode.json

For each thread count: copy and read bandwidth (the roofline takes the higher), then `generate()`, the plain loop
on the transformers cache at fp32 and bf16, and the fp32 `LeanDecoder` on both of its GEMV kernels (contiguous
matmul, and blocks of input rows as one batched GEMM across threads). The roofline of a row is bandwidth / the bytes
that row reads per token (its weights at their dtype + its KV cache), at its own thread count and at the machine's
best bandwidth over all thread counts (the stricter figure). Other processes share the machine: compare
rows of one run, as ratios. Nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from andes_lib.compress import load_language_model, text_chunks
from andes_lib.profile import (LeanDecoder, decode_bytes_per_token, kv_bytes_per_token, measure_decode,
                               roofline_bandwidth, roofline_tokens_per_s, weight_bytes)


def generate_tokens_per_s(model, prompt: torch.Tensor, new_tokens: int, repeats: int = 3) -> tuple[float, list[int]]:
    """Decode tokens/s of `generate()`: (time for N tokens - time for 1) / (N - 1), median of `repeats`."""
    kw = dict(attention_mask=torch.ones_like(prompt), do_sample=False)

    def run(n: int) -> tuple[float, torch.Tensor]:
        t = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **kw)
        return time.perf_counter() - t, out

    run(2)
    rates, out = [], None
    for _ in range(repeats):
        t1, _ = run(1)
        tn, out = run(new_tokens)
        rates.append((new_tokens - 1) / max(tn - t1, 1e-9))
    return statistics.median(rates), out[0, prompt.shape[1]:].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="repeat the whole sweep; the summary takes medians")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    model, tok = load_language_model("smol")
    prompt = text_chunks(tok, 1, args.prompt_tokens, seed=3)[0]
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    context = args.prompt_tokens + args.new_tokens // 2
    max_len = args.prompt_tokens + args.new_tokens + 8
    leans = [(f"lean fp32 {k}", LeanDecoder(model, max_len=max_len, kernel=k))
             for k in ("matmul", "split")]
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)  # bf16 weight matmuls (no bf16 arithmetic on AVX2)
    rows = []
    for threads in [t for _ in range(args.repeats) for t in args.threads]:
        torch.set_num_threads(threads)
        bw = roofline_bandwidth()
        gen_tps, ref = generate_tokens_per_s(model, prompt, args.new_tokens)
        settings = [("generate() fp32", model, weight_bytes(model), 4),
                    ("plain loop fp32", model, weight_bytes(model), 4),
                    ("plain loop bf16", model_bf16, weight_bytes(model_bf16), 2),
                    *[(label, lean, lean.weight_bytes(), 4) for label, lean in leans]]
        for label, runner, wbytes, kv_elem in settings:
            if label.startswith("generate"):
                tps, tokens = gen_tps, ref
            else:
                prof = measure_decode(runner, prompt, args.new_tokens)
                tps, tokens = prof.decode_tokens_per_s, prof.tokens
            per_token = decode_bytes_per_token(wbytes, kv_bytes_per_token(cfg.num_hidden_layers,
                                                                         cfg.num_key_value_heads, head_dim,
                                                                         kv_elem), context)
            rows.append({"threads": threads, "setting": label, "decode_tokens_per_s": tps,
                         "bytes_per_token_mb": per_token / 1e6, "tokens_equal_generate": tokens == ref,
                         "_per_token": per_token})
        bw_after = roofline_bandwidth()
        gbs = (bw["gbs"] + bw_after["gbs"]) / 2
        for r in rows:
            if r["threads"] == threads and "bandwidth_gbs" not in r:
                r.update(copy_gbs=(bw["copy_gbs"] + bw_after["copy_gbs"]) / 2,
                         read_gbs=(bw["read_gbs"] + bw_after["read_gbs"]) / 2, bandwidth_gbs=gbs,
                         roofline_tokens_per_s=roofline_tokens_per_s(gbs, r.pop("_per_token")))
                r["share_of_roofline"] = r["decode_tokens_per_s"] / r["roofline_tokens_per_s"]
    machine_gbs = max(r["bandwidth_gbs"] for r in rows)  # the machine's roofline: best bandwidth, any thread count
    for r in rows:
        r["machine_roofline_tokens_per_s"] = r["roofline_tokens_per_s"] * machine_gbs / r["bandwidth_gbs"]
        r["share_of_machine_roofline"] = r["decode_tokens_per_s"] / r["machine_roofline_tokens_per_s"]
        print(f"{r['threads']} thr  {r['setting']:20s} {r['decode_tokens_per_s']:7.2f} tok/s  roofline "
              f"{r['roofline_tokens_per_s']:7.2f} ({r['bandwidth_gbs']:.1f} GB/s: copy {r['copy_gbs']:.1f}, read "
              f"{r['read_gbs']:.1f})  {100 * r['share_of_roofline']:5.1f}%  of the machine roofline "
              f"{r['machine_roofline_tokens_per_s']:7.2f}: {100 * r['share_of_machine_roofline']:5.1f}%  "
              f"same tokens as generate: {r['tokens_equal_generate']}")
    best = max(rows, key=lambda r: r["share_of_machine_roofline"])
    print(f"best: {best['setting']} at {best['threads']} thread(s): {best['decode_tokens_per_s']:.2f} tok/s = "
          f"{100 * best['share_of_machine_roofline']:.1f}% of the machine roofline "
          f"{best['machine_roofline_tokens_per_s']:.2f} tok/s ({machine_gbs:.1f} GB/s)")
    medians = {}
    for key in dict.fromkeys((r["threads"], r["setting"]) for r in rows):
        share = statistics.median(r["share_of_roofline"] for r in rows if (r["threads"], r["setting"]) == key)
        medians[f"{key[1]} @ {key[0]} thr"] = share
        print(f"median over {args.repeats} repeat(s): {key[1]:20s} at {key[0]} thread(s): {100 * share:5.1f}% of the "
              "roofline measured beside it")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "best": best, "median_share_of_roofline": medians, "load": list(os.getloadavg())}, f, indent=1)


if __name__ == "__main__":
    main()
