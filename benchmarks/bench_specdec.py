"""Speculative decoding on SmolLM2-135M, end to end: self-distil, train the head and the HF draft model, then
compare plain greedy, HF assisted generation, HF prompt lookup and ours side by side, and check losslessness. Also
measures the head's top-1 agreement with the target on the answer tokens of new prompts (what it drafts from).

    python benchmarks/bench_specdec.py                      # the acceptance run: chapter 10's sizes, 200 lossless prompts
    python benchmarks/bench_specdec.py --train-prompts 8 --bench-prompts 1 --lossless-prompts 6   # a quick look
    python benchmarks/bench_specdec.py --train-prompts 160 --head-steps 400 --lossless-prompts 6  # the former defaults
    python benchmarks/bench_specdec.py --bench-prompts 10 --lossless-prompts 30  # a median over 30 prompts

Writes JSON to --out (default runs/bench_specdec.json) and prints the summary table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from andes_lib.model.smol import load_smol_llm, load_smol_tokenizer  # noqa: E402
from andes_lib.specdec import (KINDS, DraftHead, Target, chat_ids, collect, evaluate_head, frequent_tokens,  # noqa: E402
                               greedy_generate, make_prompts, speculative_generate, train_head)
from andes_lib.specdec.assistant import build_assistant, train_assistant  # noqa: E402
from andes_lib.profile.prepack import pack_dtype, prepack_linears  # noqa: E402
from andes_lib.specdec.invariant import exact_verify  # noqa: E402
from andes_lib.specdec.bench import REFERENCE, compare, hf_method, summarise  # noqa: E402
from andes_lib.specdec.lookup import NgramLookup  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-prompts", type=int, default=320, help="training prompts per kind")
    p.add_argument("--train-new-tokens", type=int, default=64)
    p.add_argument("--draft-vocab", type=int, default=2048)
    p.add_argument("--head-steps", type=int, default=300, help="draft-head steps (chapter 10's HEAD_STEPS)")
    p.add_argument("--head-batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=6e-3)
    p.add_argument("--ce-weight", type=float, default=1.0)
    p.add_argument("--lookup-len", type=int, default=8, help="n-gram lookup draft tokens per round (0: none)")
    p.add_argument("--lookup-n", type=int, default=6, help="the longest suffix the n-gram lookup matches")
    p.add_argument("--lookup-min", type=int, default=1,
                   help="head + lookup: a lookup this long drafts alone (0: merge both into one tree)")
    p.add_argument("--no-prepack", action="store_true", help="keep nn.Linear (MKL) instead of oneDNN-prepacked")
    p.add_argument("--pack", default="auto", help="packed weights: auto (bf16 with AMX, else fp32), bf16 or fp32")
    p.add_argument("--assist-layers", type=int, default=4)
    p.add_argument("--assist-steps", type=int, default=60)
    p.add_argument("--bench-prompts", type=int, default=3, help="benchmark prompts per kind")
    p.add_argument("--agreement-prompts", type=int, default=16,
                   help="new prompts per kind whose answers measure the head's agreement with the target")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lossless-prompts", type=int, default=200, help="prompts (all kinds) for the lossless check")
    p.add_argument("--lossless-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_specdec.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads()}
    t_start = time.perf_counter()
    model, tok = load_smol_llm(), load_smol_tokenizer()
    dtype = pack_dtype(args.pack)
    if not args.no_prepack:  # every method below runs on the same kernels
        result["prepacked_linears"] = prepack_linears(model, dtype=dtype)
        result["pack_dtype"] = str(dtype)
        if dtype == torch.bfloat16:
            exact_verify(model)  # verify rows get a decoding step's bits: lossless with bf16 inputs
    target = Target(model)

    t0 = time.perf_counter()
    train = make_prompts(args.train_prompts, seed=0)
    bf16 = not args.no_prepack and dtype == torch.bfloat16
    # the same weights in plain bf16 write and read the batched answers (prepacked kernels are built for few rows)
    writer = Target(load_smol_llm().to(torch.bfloat16).eval()) if bf16 else target
    data = collect(writer, tok, [r["prompt"] for r in train], max_new_tokens=args.train_new_tokens,
                   batch_size=64, keep_layers=(args.assist_layers - 1,))
    result["data"] = {"sequences": len(data), "tokens": data.tokens, "seconds": time.perf_counter() - t0}
    vocab = frequent_tokens(data.labels, args.draft_vocab, target.eos_ids) if args.draft_vocab else None
    head = DraftHead.from_target(target, vocab=vocab)
    hist = train_head(head, target, data, steps=args.head_steps, batch_size=args.head_batch, lr=args.lr,
                      ce_weight=args.ce_weight, bf16=bf16)
    result["head"] = {"seconds": hist.seconds, "last": hist.rows[-1]}
    assistant = build_assistant(model, args.assist_layers)
    ahist = train_assistant(assistant, data, vocab if vocab is not None else torch.zeros(0, dtype=torch.long),
                            steps=args.assist_steps, batch_size=args.head_batch)
    result["assistant"] = {"seconds": ahist.seconds, "last": ahist.rows[-1]}
    if not args.no_prepack:
        prepack_linears(assistant, dtype=dtype)
    lookup = NgramLookup(data.ids, max_n=args.lookup_n) if args.lookup_len else None
    result["training_seconds"] = time.perf_counter() - t0

    # new prompts (never answered in training) for the benchmark and the head's agreement; losslessness does not need
    # new prompts (the chat generator has 450 distinct ones, 320 of them in training by default)
    exclude = {r["prompt"] for r in train}
    test = make_prompts(args.bench_prompts, seed=1, exclude=exclude)
    fresh = make_prompts(args.agreement_prompts, seed=3, exclude=exclude | {r["prompt"] for r in test})
    answers = collect(writer, tok, [r["prompt"] for r in fresh], max_new_tokens=args.train_new_tokens, batch_size=64)
    agreement = {"all": evaluate_head(head, target, answers, answers_only=True)["top1"]}
    for kind in KINDS:
        rows = [i for i, r in enumerate(fresh) if r["kind"] == kind]
        if rows:
            agreement[kind] = evaluate_head(head, target, answers.subset(rows), answers_only=True)["top1"]
    result["head_agreement_new_prompts"] = agreement
    del writer
    tree = dict(mode="tree", topk=4, depth=5, tree_size=16)
    methods = {
        REFERENCE: hf_method(model),
        "ours, greedy loop": lambda ids, n: greedy_generate(target, ids, n),
        "HF assisted (draft model)": hf_method(model, assistant_model=assistant, num_assistant_tokens=4,
                                               num_assistant_tokens_schedule="constant",
                                               assistant_confidence_threshold=0.0),
        "HF prompt lookup": hf_method(model, prompt_lookup_num_tokens=4),
        "ours chain k=4": lambda ids, n: speculative_generate(target, head, ids, n, mode="chain", draft_len=4),
        "ours tree 16": lambda ids, n: speculative_generate(target, head, ids, n, **tree),
    }
    if lookup is not None:
        chain = dict(mode="chain", draft_len=4, lookup=lookup, lookup_len=args.lookup_len, lookup_min=args.lookup_min)
        methods["ours chain k=4 + lookup"] = lambda ids, n: speculative_generate(target, head, ids, n, **chain)
        methods["lookup alone (ours)"] = lambda ids, n: speculative_generate(target, head, ids, n, **{
            **chain, "draft_len": 0})
    bench = [r for k in KINDS for r in [x for x in test if x["kind"] == k][: args.bench_prompts]]
    rows = compare(methods, tok, bench, args.max_new_tokens)
    result["benchmark_rows"], result["summary"] = rows, summarise(rows)
    save(result, args.out)  # the speed figures survive a stopped lossless check

    t0 = time.perf_counter()
    lossless_rows = make_prompts(-(-args.lossless_prompts // len(KINDS)), seed=2)[: args.lossless_prompts]
    checks = {"chain": dict(mode="chain", draft_len=4), "tree": tree}
    if lookup is not None:
        checks["chain+lookup"] = chain
    same, differ = dict.fromkeys(checks, 0), []
    for k, row in enumerate(tqdm(lossless_rows, desc="lossless check")):
        ids = chat_ids(tok, row["prompt"])
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.lossless_new_tokens,
                             do_sample=False)[0, ids.shape[1]:].tolist()
        for mode, kwargs in checks.items():
            got = speculative_generate(target, head, ids, args.lossless_new_tokens, **kwargs).tokens
            same[mode] += got == ref
            if got != ref:
                differ.append({"prompt": k, "mode": mode, **first_difference(model, ids, ref, got)})
    result["lossless"] = {"prompts": len(lossless_rows), **same, "differences": differ,
                          "seconds": time.perf_counter() - t0}
    result["total_seconds"] = time.perf_counter() - t_start
    save(result, args.out)
    for s in result["summary"]:
        accepted = "-" if s["mean_accepted_length"] is None else f"{s['mean_accepted_length']:.2f}"
        print(f"{s['method']:28s} decode: median {s['median_decode_speedup']:.2f}x peak {s['peak_decode_speedup']:.2f}x"
              f"  end to end: median {s['median_speedup']:.2f}x peak {s['peak_speedup']:.2f}x  "
              f"accepted {accepted}  lossless {s['lossless']:.2f}")
    print(f"lossless: {result['lossless']}")
    print(f"head agreement on new prompts' answer tokens: {result['head_agreement_new_prompts']}")
    print(f"training {result['training_seconds']:.0f} s (head {hist.seconds:.0f} s); total {result['total_seconds']:.0f} s")
    return 0


def first_difference(model: torch.nn.Module, ids: torch.Tensor, ref: list[int], got: list[int]) -> dict:
    """Where a speculative output leaves the reference, and the reference's top-2 logit gap there (a gap near
    float32 rounding means a near-tie that the verify pass's different kernel shapes broke the other way)."""
    j = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
    with torch.no_grad():
        top = model(torch.cat([ids[0], torch.tensor(ref[:j], dtype=ids.dtype)])[None]).logits[0, -1].topk(2).values
    return {"position": j, "top2_gap": float(top[0] - top[1])}


def save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
