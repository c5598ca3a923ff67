"""Resume under DDP: two CPU processes (`accelerate launch --cpu --num_processes 2`, gloo), a tiny stage.

Launch 1 trains the stage uninterrupted and, into another folder, the same stage stopped after a checkpoint
(`stop_after`, how the project simulates a kill). Launch 2, a fresh pair of processes, resumes the stopped one.
The resumed run must end with exactly the weights and loss history of the uninterrupted one: with two ranks the
gradient all-reduce is a single commutative addition, so gloo on CPU is deterministic and nothing needs a tolerance.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TIMEOUT_S = 240  # per launch; a healthy one takes ~10 s

# Runs in each of the two processes; `test_train` supplies the tiny recipe and the hand-made datasets.
CHILD = """
import json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import test_train
from andes_lib.train.loop import run_stage

recipe = test_train.recipe(steps=6, save_every=2, batch_size=4, grad_accum=2, text_only=0.25)
results = {{}}
for label, folder, stop_after in {runs!r}:
    r = run_stage(recipe, folder, stop_after=stop_after, progress=False, datasets_fn=test_train.tiny_build_dataset)
    results[label] = {{"path": str(r.path) if r.path else None, "losses": [h["loss"] for h in r.history],
                      "resumed_from_step": r.info["resumed_from_step"]}}
from accelerate import PartialState
state = PartialState()
results["world"] = state.num_processes
results["distributed"] = [str(state.distributed_type).split(".")[-1], state.backend]
if state.is_main_process:
    with open({out!r}, "w") as f:
        json.dump(results, f)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, name: str, runs: list[tuple[str, str, int | None]]) -> dict:
    """Run CHILD under `accelerate launch --cpu --num_processes 2`; returns what the main process wrote."""
    script, out = tmp_path / f"{name}.py", tmp_path / f"{name}.json"
    script.write_text(CHILD.format(tests=str(TESTS), runs=runs, out=str(out)), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # `--cpu --num_processes 2` would start ONE process: accelerate's `--cpu` path is its simple launcher, which
    # only spreads over several processes through `mpirun`. `--multi_gpu` goes through torchrun (2 processes), and
    # ACCELERATE_USE_CPU makes each of them pick the CPU and gloo (MULTI_CPU), even on a machine with GPUs.
    env["ACCELERATE_USE_CPU"] = "true"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--machine_rank", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(script)]
    try:
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        pytest.fail(f"launch {name!r} did not finish within {TIMEOUT_S} s; its stderr ends:\n{stderr[-4000:]}")
    if done.returncode != 0 or not out.is_file():
        pytest.fail(f"launch {name!r} failed (exit {done.returncode}); its stderr ends:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_a_stage_stopped_and_resumed_under_ddp_ends_bit_exactly_where_the_uninterrupted_run_does(tmp_path):
    straight, stopped = tmp_path / "straight" / "final", tmp_path / "stopped" / "final"
    first = launch(tmp_path, "first", [("straight", str(straight), None), ("stopped", str(stopped), 3)])
    assert first["world"] == 2 and first["distributed"] == ["MULTI_CPU", "gloo"], first
    assert first["stopped"]["path"] is None and len(first["stopped"]["losses"]) == 3
    ckpts = sorted(p.name for p in (tmp_path / "stopped" / "final.checkpoints").glob("step-*"))
    assert ckpts == ["step-000002", "step-000003"], ckpts  # save_every=2, plus the one at the stop

    second = launch(tmp_path, "second", [("resumed", str(stopped), None)])
    resumed = second["resumed"]
    assert second["world"] == 2 and resumed["resumed_from_step"] == 3 and resumed["path"] == str(stopped)
    assert resumed["losses"] == first["straight"]["losses"]  # the steps before the stop come from the checkpoint
    assert not (tmp_path / "stopped" / "final.checkpoints").exists()  # removed once the final model is written

    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(stopped / "model.safetensors"))
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ after the resume, e.g. {differ[:5]}"
