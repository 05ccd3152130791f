"""Linear memory on the CPU reference path: a tiny model at 32k tokens, fp32 and bf16.

The references of the recurrent mixers run chunk by chunk with state passing, so a forward is
linear in memory (before, the linear-attention reference built the L x L matrix: 2.6 GB at 8k
tokens and killed for lack of memory at 32k). Runs in a subprocess so that its peak resident
memory can be read and bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT
from tests.modeling.zoo_models import CAUSAL_LMS

LENGTH = 32768
STEPS = 4
# Peak resident memory of the whole process (Python, torch, transformers and the model
# included): 0.55 GB measured for both dtypes at 32k with the CPU build of torch, 1.2 GB with
# the GPU machine's CUDA build (its import alone is larger); the quadratic reference was killed.
MAX_RSS_MB = 2000

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from tests.modeling.zoo_models import make_model, random_ids

    model_type, length, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(2)
    report = {}
    # A model whose one call reads at most ``trunc_len`` tokens (RTF's kernel grid) is built
    # with a grid that holds the whole input.
    fields = make_model(model_type).config.to_dict()
    # (MAD's Hyena filters are defined for max_position_embeddings positions: the same holds.)
    overrides = {
        key: length + steps for key in ("trunc_len", "max_position_embeddings") if key in fields
    }
    for dtype in (torch.float32, torch.bfloat16):
        model = make_model(model_type, **overrides).to(dtype)
        ids = random_ids(model, 1, length + steps, seed=4)
        with torch.no_grad():
            full = model(ids, use_cache=False).logits[:, length:].float()
            out = model(ids[:, :length])
            prefill_ok = bool(torch.isfinite(out.logits).all())
            stepped = []
            for t in range(length, length + steps):
                out = model(ids[:, t : t + 1], past_key_values=out.past_key_values)
                stepped.append(out.logits.float())
        stepped = torch.cat(stepped, 1)
        report[str(dtype)] = {
            "finite": prefill_ok and bool(torch.isfinite(full).all()),
            "max_diff": (stepped - full).abs().max().item(),
            "scale": full.abs().max().item(),
        }
    report["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report))
    """
)


# MAD's tiny hybrid takes ~35 s here (six primitives at 32k tokens): run with -m slow.
@pytest.mark.parametrize(
    "model_type",
    [pytest.param(t, marks=pytest.mark.slow) if t == "hazyzoo_mad" else t for t in CAUSAL_LMS],
)
def test_32k_tokens_on_cpu_in_linear_memory(model_type):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, model_type, str(LENGTH), str(STEPS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["max_rss_mb"] < MAX_RSS_MB, report
    fp32, bf16 = report["torch.float32"], report["torch.bfloat16"]
    assert fp32["finite"] and bf16["finite"], report
    # Stepwise decoding after the long prefill equals the parallel forward over all tokens.
    assert fp32["max_diff"] <= 1e-4 * max(1.0, fp32["scale"]), report
    assert bf16["max_diff"] <= 5e-2 * max(1.0, bf16["scale"]), report
