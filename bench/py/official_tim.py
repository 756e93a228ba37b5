"""The official TiM pieces the Python benchmarks import, with the two CPU shims they need (no change to
the official code): torch.cuda.get_rng_state / set_rng_state become no-ops (the official loss saves and
restores the CUDA RNG around forwards), and OfficialCall lets the network take the official loss's extra
keyword arguments (jvp, attn_type).

load(official, repo) -> (TransitionSchedule, OT_FM, TiM): the loss and transport from the snapshot of
WZDTHU/TiM at `official` (unchanged), and test/fixtures/tim_reference.py's TiM (the project's
statement-by-statement copy of the official model; the official file imports timm, einops, flash_attn).
"""
import os
import sys

import torch


class OfficialCall(torch.nn.Module):
    """Takes the keyword arguments the official loss passes (y, return_zs, jvp, attn_type)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, r, y, return_zs=False, jvp=False, attn_type=None):
        return self.net(x, t, r, y, return_zs=return_zs)


def load(official, repo):
    torch.cuda.get_rng_state = lambda *a, **k: None
    torch.cuda.set_rng_state = lambda *a, **k: None
    sys.path.insert(0, official)
    sys.path.insert(0, os.path.join(repo, "test", "fixtures"))
    from tim.schedulers.transition import TransitionSchedule  # official, unchanged
    from tim.schedulers.transports import OT_FM  # official, unchanged
    from tim_reference import TiM
    return TransitionSchedule, OT_FM, TiM
