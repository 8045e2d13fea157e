"""The Cloud TPU types and zones the scripts know, with runtime versions and price estimates.

This list is a snapshot (2025) of Google's published tables, kept so that a typo in a zone or an
accelerator type fails here, before a VM is requested, with a message naming the choices.
Google adds zones and types: check what a zone offers with

    gcloud compute tpus accelerator-types list --zone=ZONE

and pass ``--allow-unknown`` to use a zone or type that is not listed here yet.
Prices are on-demand list prices per chip-hour in US regions, in USD, as estimates only: they
change, differ by region, and Spot capacity is usually far cheaper
(https://cloud.google.com/tpu/pricing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launch.common import LaunchError


@dataclass(frozen=True)
class Generation:
    name: str
    prefix: str                  # accelerator types are PREFIX-SIZE
    sizes: tuple[int, ...]
    size_counts_cores: bool      # v2-v5p: SIZE counts TensorCores (2 per chip); v5e, v6e: chips
    single_host_chips: int       # the largest slice that is one VM
    runtime_version: str         # the --version / --runtime-version for JAX
    zones: tuple[str, ...]
    usd_per_chip_hour: float     # on-demand estimate


GENERATIONS: tuple[Generation, ...] = (
    Generation("v2", "v2", (8, 32, 128, 256, 512), True, 4, "tpu-ubuntu2204-base",
               ("us-central1-b", "us-central1-c", "us-central1-f", "europe-west4-a",
                "asia-east1-c"), 1.125),
    Generation("v3", "v3", (8, 32, 64, 128, 256, 512, 1024, 2048), True, 4,
               "tpu-ubuntu2204-base",
               ("us-central1-a", "us-central1-b", "us-central1-f", "europe-west4-a"), 2.00),
    Generation("v4", "v4", (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096), True, 4,
               "tpu-ubuntu2204-base", ("us-central2-b",), 3.22),
    Generation("v5e", "v5litepod", (1, 4, 8, 16, 32, 64, 128, 256), False, 8,
               "v2-alpha-tpuv5-lite",
               ("us-central1-a", "us-east1-c", "us-east5-a", "us-east5-b", "us-south1-a",
                "us-west1-c", "us-west4-a", "europe-west4-b", "asia-southeast1-b"), 1.20),
    Generation("v5p", "v5p", (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192), True, 4,
               "v2-alpha-tpuv5", ("us-central1-a", "us-east5-a", "europe-west4-b"), 4.20),
    Generation("v6e", "v6e", (1, 4, 8, 16, 32, 64, 128, 256), False, 8, "v2-alpha-tpuv6e",
               ("us-central1-b", "us-central2-b", "us-east1-d", "us-east5-a", "us-east5-b",
                "us-south1-a", "europe-west4-a", "asia-northeast1-b", "southamerica-west1-a"),
               2.70),
)

_TYPE = re.compile(r"(?P<prefix>[a-z0-9]+?)-(?P<size>\d+)\Z")
_ZONE = re.compile(r"[a-z]+-[a-z]+\d+-[a-z]\Z")


@dataclass(frozen=True)
class TpuType:
    name: str                    # e.g. v5litepod-8
    generation: Generation | None  # None for a type allowed with --allow-unknown
    chips: int
    hosts: int

    @property
    def chips_per_host(self) -> int:
        return self.chips // self.hosts

    def usd_per_hour(self) -> float | None:
        return None if self.generation is None else self.chips * self.generation.usd_per_chip_hour


def known_types() -> list[str]:
    return [f"{g.prefix}-{s}" for g in GENERATIONS for s in g.sizes]


def tpu_type(name: str, *, allow_unknown: bool = False, hosts: int | None = None) -> TpuType:
    """Parse and check an accelerator type; ``hosts`` overrides the count for unknown ones."""
    m = _TYPE.match(name)
    if not m:
        raise LaunchError(f"bad accelerator type {name!r}; expected e.g. v5litepod-8, v4-32, "
                          "v6e-16")
    size = int(m["size"])
    for g in GENERATIONS:
        if m["prefix"] == g.prefix:
            if size not in g.sizes and not allow_unknown:
                raise LaunchError(f"unknown accelerator type {name!r}: {g.name} comes as "
                                  f"{', '.join(f'{g.prefix}-{s}' for s in g.sizes)} "
                                  "(pass --allow-unknown if Google lists it now)")
            chips = size // 2 if g.size_counts_cores else size
            n_hosts = hosts or (1 if chips <= g.single_host_chips else max(1, chips // 4))
            return TpuType(name, g, chips, n_hosts)
    if not allow_unknown:
        raise LaunchError(f"unknown accelerator type {name!r}; known generations: "
                          f"{', '.join(g.prefix + '-N' for g in GENERATIONS)} (see `python -m "
                          "launch.tpu_vm types`; pass --allow-unknown with --hosts for others)")
    return TpuType(name, None, size, hosts or 1)


def check_zone(zone: str, tpu: TpuType, *, allow_unknown: bool = False) -> None:
    if not _ZONE.match(zone):
        raise LaunchError(f"bad zone {zone!r}; expected a zone name like us-central2-b")
    if allow_unknown or tpu.generation is None:
        return
    if zone not in tpu.generation.zones:
        raise LaunchError(f"unknown zone {zone!r} for {tpu.generation.name} ({tpu.name}); known "
                          f"zones: {', '.join(tpu.generation.zones)} (pass --allow-unknown if "
                          "Google offers it there now)")


def runtime_version(tpu: TpuType, override: str | None) -> str:
    if override:
        return override
    if tpu.generation is None:
        raise LaunchError(f"no default runtime version for unknown type {tpu.name!r}; pass "
                          "--version (see `gcloud compute tpus versions list --zone=ZONE`)")
    return tpu.generation.runtime_version


def cost_note(tpu: TpuType) -> str:
    rate = tpu.usd_per_hour()
    if rate is None:
        return f"{tpu.name}: no price estimate for an unlisted type"
    return (f"estimate: {tpu.name} = {tpu.chips} chip(s) on {tpu.hosts} host(s) x "
            f"~${tpu.generation.usd_per_chip_hour:.2f}/chip-hour on demand = ~${rate:.2f}/hour "
            "while it exists (list price; Spot is usually much cheaper; "
            "https://cloud.google.com/tpu/pricing)")


def table() -> str:
    rows = [f"{'generation':<10} {'types':<58} {'runtime':<22} {'~$/chip-h':>9}  zones"]
    for g in GENERATIONS:
        types = ",".join(str(s) for s in g.sizes)
        rows.append(f"{g.name:<10} {g.prefix + '-{' + types + '}':<58} {g.runtime_version:<22} "
                    f"{g.usd_per_chip_hour:>9.2f}  {' '.join(g.zones)}")
    return "\n".join(rows)
