"""The ``train_hybrid`` bench's peer: the same hybrid train step in PyTorch eager (CPU).

Not part of the project (which does not depend on PyTorch) and not a bench case (the
runner skips modules whose name starts with ``_``): a script run in a separate
environment that has torch, so the peer figure in :mod:`experiments.bench.train` can be
measured again::

    python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python experiments/bench/_torch_peer.py --repeats 3

The architecture, loss and optimiser follow :mod:`sparsejax.models.vae` (the
disentanglement_lib conv encoder / deconv decoder, a 500-unit ReLU(TopK) layer between the
256-d hidden layer and the latent heads, an SAE decoder against the detached hidden layer,
Bernoulli + KL + SAE loss, Adam lr 1e-4). The batch is a fixed tensor of random binary
64 x 64 images (no rendering: the peer is spared the cost our step pays to draw dSprites).
Prints one JSON line per memory layout (``contiguous``: NCHW; ``channels_last``: NHWC),
images/s the median of ``--repeats`` timed runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

B, K, N, LATENTS, HIDDEN = 64, 50, 500, 10, 256


class Hybrid(nn.Module):
    def __init__(self, channels: int = 1):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels, 32, 4, 2, 1), nn.Conv2d(32, 32, 4, 2, 1),
                                    nn.Conv2d(32, 64, 2, 2), nn.Conv2d(64, 64, 2, 2)])
        self.fc = nn.Linear(1024, HIDDEN)
        self.enc_sae, self.dec_sae = nn.Linear(HIDDEN, N), nn.Linear(N, HIDDEN)
        self.mean, self.logvar = nn.Linear(N, LATENTS), nn.Linear(N, LATENTS)
        self.fc1, self.fc2 = nn.Linear(LATENTS, 256), nn.Linear(256, 1024)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(64, 64, 4, 2, 1),
                                      nn.ConvTranspose2d(64, 32, 4, 2, 1),
                                      nn.ConvTranspose2d(32, 32, 4, 2, 1),
                                      nn.ConvTranspose2d(32, channels, 4, 2, 1)])

    def loss(self, x, eps, k: int):
        h = x
        for conv in self.convs:
            h = F.relu(conv(h))
        f = F.relu(self.fc(h.flatten(1)))
        pre = self.enc_sae(f)
        val, idx = torch.topk(pre, k, dim=-1)
        code = torch.zeros_like(pre).scatter(-1, idx, F.relu(val))
        sae = (self.dec_sae(code) - f.detach()).square().sum(-1).mean()
        mu, logvar = self.mean(code), self.logvar(code)
        z = mu + torch.exp(0.5 * logvar) * eps
        g = F.relu(self.fc2(F.relu(self.fc1(z)))).reshape(-1, 64, 4, 4)
        for i, deconv in enumerate(self.deconvs):
            g = deconv(g)
            if i < len(self.deconvs) - 1:
                g = F.relu(g)
        recon = F.binary_cross_entropy_with_logits(g, x, reduction="none").flatten(1).sum(-1)
        kl = 0.5 * (mu.square() + logvar.exp() - logvar - 1).sum(-1)
        return recon.mean() + kl.mean() + sae


def images_per_s(layout: str, seconds: float) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = Hybrid().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    x = (torch.rand(B, 1, 64, 64) < 0.1).float().to(memory_format=fmt)
    eps = torch.randn(B, LATENTS)

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x, eps, K).backward()
        opt.step()

    for _ in range(5):
        step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    return steps * B / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    for layout in ("contiguous", "channels_last"):
        rates = [images_per_s(layout, args.seconds) for _ in range(args.repeats)]
        print(json.dumps({"peer": "pytorch_eager", "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "layout": layout, "batch": B,
                          "k": K, "images_per_s": round(statistics.median(rates), 1),
                          "runs": [round(r, 1) for r in rates]}), flush=True)


if __name__ == "__main__":
    main()
