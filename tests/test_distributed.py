"""Two-process training through torchrun on the CPU (gloo): the replicas must stay identical, and the
saved run must load with Translator.

The run takes a few iterations of the tiny model at 32x32 (about 15 s on 2 cores, mostly interpreter
start-up); the subprocess is killed after 60 s.
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

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training_keeps_replicas_identical(tmp_path, image_files):
    from lmt_fast import Translator

    run = tmp_path / "run"
    settings = ["backend=reference", "model_preset=tiny", "data.image_size=32", "model.d_layers=4",
                "batch_size=2", "n_critic=2", "progress=false", "data.synthetic_length=8", "log_every=1",
                "checkpoint_every=2", "sample_every=1000", "tensorboard=false"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "lmt_train", "train", "--iterations", "3", "--device", "cpu", "--run-dir", str(run)]
    for item in settings:
        command += ["--set", item]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 3
    checksums = summary["replica_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]           # G and D identical on both ranks
    assert (run / "latest").read_text().strip() == "checkpoints/step_0000003"
    assert len(list((run / "checkpoints").iterdir())) == 2                # steps 2 and 3
    out = Translator.load(run).translate(image_files.rgb64_png, image_files.rgb64_png)
    assert out.image.size == (64, 64)
