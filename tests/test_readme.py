"""Every Python snippet of the README runs as written.

Each ```python block of README.md is preceded by an HTML comment ``<!-- snippet: NAME -->``
that names what the reader is assumed to hold already (their model, data, ``loss_fn``): the
CONTEXT of that name below. The test writes the context, then the snippet unchanged, then a
check of what the snippet built, into one script and runs it in a fresh process in a temporary
directory (``torchrun`` with two gloo processes for the multi-process snippets). ``plan="auto"``
profiles with a short budget there ($HETSAM_PROFILE_BUDGET_SECONDS) and a private cache.
A block without a known name fails the test, so a new snippet cannot go untested.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_MODEL = """
import torch
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
train_set = TensorDataset(torch.randn(256, 64), torch.randint(0, 10, (256,)))
"""
_LOSS = """
def loss_fn(model, batch):
    x, y = batch
    logits = model(x)
    return torch.nn.functional.cross_entropy(logits, y), logits
"""

# name -> (what the reader holds, what the test checks afterwards, how it runs)
CONTEXT: dict[str, tuple[str, str, str]] = {
    "loop": (_MODEL + "loader = DataLoader(train_set, batch_size=32)\ndev = 'cpu'\n",
             "assert opt.stats()['steps'] == 8 and torch.isfinite(loss)\n", "python"),
    "lightning": (_MODEL + _LOSS + "import hetsam\n",
                  "import glob\nassert glob.glob('lightning_logs/*')\n", "python"),
    "trainer": ("import sys\nsys.path.insert(0, {examples!r})\nfrom hf_trainer import CountingTask, make_model\n"
                "model, ds = make_model(0), CountingTask(256)\n",
                "assert trainer.state.global_step == trainer.autosam.stats()['steps'] > 0\n", "python"),
    "accelerate": (_MODEL + _LOSS + "import hetsam\nloader = DataLoader(train_set, batch_size=16)\n",
                   "assert autosam.stats()['steps'] == 8\n", "python"),
    "cuda": (_MODEL + _LOSS + "import hetsam\nmodel = model.cuda()\n", "", "cuda"),
    "ddp": (_MODEL.replace("train_set", "dataset") + _LOSS + "import hetsam\nepochs = 2\n",
            "import torch.distributed as dist\nflat = torch.cat([p.detach().flatten() for p in model.parameters()])\n"
            "both = [torch.empty_like(flat) for _ in range(dist.get_world_size())]\ndist.all_gather(both, flat)\n"
            "assert torch.equal(both[0], both[1]) and opt.stats()['steps'] > 0\n"
            "from hetsam.execution.distributed import exit_process\nexit_process(0)  # torch 2.13's gloo may abort at exit\n",
            "torchrun"),
    "study": ("import torch\ntorch.manual_seed(0)\nx_train, y_train = torch.randn(96, 8), torch.randint(0, 3, (96,))\n"
              "def make_model():\n    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))\n"
              "def loss_fn(model, batch):\n    x, y = batch\n    return torch.nn.functional.cross_entropy(model(x), y)\n"
              "def evaluate(model):\n    with torch.no_grad():\n        return (model(x_train).argmax(1) == y_train).float().mean().item()\n"
              "import hetsam\n",
              "import json, os\nassert os.path.getsize('shares.json') > 0 and json.load(open('shares.json'))\n", "python"),
}


def snippets() -> list[tuple[int, str, str]]:
    """``(line, name, code)`` of every python block; name is None when no comment names it."""
    text = README.read_text()
    out = []
    for m in re.finditer(r"(?:<!-- snippet: ([\w-]+) -->\n)?```python\n(.*?)```", text, re.S):
        out.append((text[:m.start(2)].count("\n"), m.group(1), m.group(2)))
    return out


def test_every_snippet_is_named():
    unnamed = [line for line, name, _ in snippets() if name not in CONTEXT]
    assert not unnamed, f"README python blocks at lines {unnamed} need a '<!-- snippet: NAME -->' line above them " \
                        f"naming one of {sorted(CONTEXT)} (tests/test_readme.py)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("line,name,code", snippets(), ids=[f"line{line}-{name}" for line, name, _ in snippets()])
def test_snippet_runs_as_written(line, name, code, tmp_path):
    if name not in CONTEXT:
        pytest.fail(f"the README block at line {line} names no known context")
    context, check, how = CONTEXT[name]
    if how == "cuda" and not torch.cuda.is_available():
        pytest.skip("the snippet places work on a CUDA GPU; torch.cuda.is_available() is False")
    script = tmp_path / f"snippet_{line}.py"
    script.write_text(context.format(examples=str(ROOT / "examples")) + "\n# ---- README.md, line "
                      f"{line} ----\n" + code + "\n# ---- the test's check ----\n" + textwrap.dedent(check))
    env = {**os.environ, "HETSAM_PROFILE_BUDGET_SECONDS": "3", "HETSAM_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    if how == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
               str(script)]
    else:
        cmd = [sys.executable, str(script)]
    try:
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"README line {line} ({name}) did not finish in {exc.timeout:g} s")
    assert out.returncode == 0, f"README line {line} ({name}) failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
