"""Helpers shared by the model tests (and by the oracle script that produced the fixtures).

A *manifest* is the list of (parameter/buffer name, shape) pairs of an official model's
state dict, stored as JSON under tests/fixtures/manifests/ (see the README there).
``random_state_dict`` turns a manifest into a deterministic random state dict so the same
weights can be rebuilt from the manifest alone, both here and in the oracle run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

MANIFEST_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"


def load_manifest(name: str) -> dict:
    """Read ``<name>.json``: {"source": str, "entries": [[key, [shape...]], ...], ...}."""
    return json.loads((MANIFEST_DIR / f"{name}.json").read_text())


def manifest_shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    return {key: tuple(shape) for key, shape in manifest["entries"]}


def meta_state_dict(manifest: dict) -> dict[str, torch.Tensor]:
    """Shape-only tensors (meta device): for huge models, no memory is allocated."""
    return {k: torch.empty(s, device="meta") for k, s in manifest_shapes(manifest).items()}


def _random_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Plausible values per kind of tensor so that deep nets keep sane activations."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.tensor(7, dtype=torch.long)
    if leaf == "running_var":
        return torch.rand(shape, generator=gen) * 0.5 + 0.75
    if leaf == "running_mean":
        return torch.randn(shape, generator=gen) * 0.1
    if len(shape) <= 1:
        is_scale = leaf == "weight"  # BN / LN / GN affine scale
        base = 1.0 if is_scale else 0.0
        return base + torch.randn(shape, generator=gen) * 0.1
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=gen) / math.sqrt(fan_in)


def random_state_dict(manifest: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random tensors for every manifest entry, drawn in manifest order."""
    gen = torch.Generator().manual_seed(seed)
    return {k: _random_tensor(k, s, gen) for k, s in manifest_shapes(manifest).items()}
