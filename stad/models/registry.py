"""Name -> factory registry for backbones, heads and whole detectors (timm style).

Factories take explicit keyword arguments only; nothing reads a global config.

    >>> from stad.models.registry import create_model, list_models
    >>> backbone = create_model("slowfast_tiny")
    >>> list_models(kind="backbone")
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

KINDS = ("backbone", "head", "detector")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str
    factory: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, kind: str = "backbone") -> Callable:
    """Decorator registering ``factory`` under ``name`` (default: the function name)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _REGISTRY and _REGISTRY[key].factory is not factory:
            raise ValueError(f"model name {key!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelEntry(key, kind, factory, doc[0] if doc else "")
        return factory

    return decorator


def _ensure_builtin_models() -> None:
    # Importing the modules runs their @register_model decorators.
    from stad.models import action_model, heads, slowfast, vit  # noqa: F401
    from stad.models.recognition import swin, video_nets  # noqa: F401


def get_entry(name: str, kind: str | None = None) -> ModelEntry:
    """The registry entry ``name``; with ``kind``, it must be of that kind ('backbone', 'head', 'detector').

    An unknown name raises ``KeyError`` with a "did you mean" hint (among that kind's names when
    ``kind`` is given); a name of another kind raises ``ValueError``."""
    _ensure_builtin_models()
    if name not in _REGISTRY:
        pool = list_models(kind)
        close = difflib.get_close_matches(name, pool, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        if kind is not None:
            raise KeyError(f"unknown {kind} {name!r}{hint} (registered {kind}s: {', '.join(pool)})")
        raise KeyError(f"unknown model {name!r}{hint} (see stad.models.list_models())")
    entry = _REGISTRY[name]
    if kind is not None and entry.kind != kind:
        raise ValueError(f"{name!r} is a {entry.kind}, not a {kind} "
                         f"(registered {kind}s: {', '.join(list_models(kind))})")
    return entry


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with explicit keyword arguments."""
    return get_entry(name).factory(**kwargs)


def list_models(kind: str | None = None) -> list[str]:
    """Sorted registered names, optionally only one kind ('backbone', 'head', 'detector')."""
    _ensure_builtin_models()
    return sorted(k for k, e in _REGISTRY.items() if kind is None or e.kind == kind)
