"""A checkpoint's tensors as one flat tensor per dtype and device, and back.

``torch.save`` pickles every tensor on its own, about 20 us each: a 56-layer net with its
momentum buffers is about 500 tensors, 18 ms at every epoch. A ``Packer`` copies them (one
``_foreach_copy_``) into flat tensors it keeps from one epoch to the next, and the checkpoint
holds those and where each tensor lies in them: 8 ms. A packed state is plain data (dicts,
lists, numbers, strings and the flat tensors), so the store reads it without unpickling code;
``unpack`` checks every tensor's place against the flat tensors before it takes one out.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import torch

PACKED = "packed"  # the key that says a saved state is packed; its value is the format's version
_PLACE = "__packed_tensor__"  # a tensor's place in the tree: {_PLACE: its index in "places"}


def _refuse_place(x: dict[str, Any]) -> Any:
    raise ValueError(f"a state to pack may not use the key {_PLACE!r}")


def _walk(x: Any, tensor: Any, place: Any = _refuse_place) -> Any:
    """``x`` rebuilt (dicts, lists, tuples) with every tensor replaced by ``tensor(it)`` and every
    tensor's place (a dict holding ``_PLACE``) by ``place(it)``."""
    if isinstance(x, torch.Tensor):
        return tensor(x)
    if isinstance(x, dict):
        if _PLACE in x:
            return place(x)
        return {k: _walk(v, tensor, place) for k, v in x.items()}
    if isinstance(x, list):
        return [_walk(v, tensor, place) for v in x]
    if isinstance(x, tuple):
        return tuple(_walk(v, tensor, place) for v in x)
    return x


def _extent(shape: list[int], stride: list[int]) -> int:
    """How many elements from its offset a tensor of ``shape`` and ``stride`` reaches."""
    if 0 in shape:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))


class Packer:
    """Packs one run's states; the flat tensors are kept and reused while the layout stays."""

    def __init__(self) -> None:
        self._layout: list[tuple[Any, ...]] = []
        self._flat: dict[str, torch.Tensor] = {}
        self._views: list[torch.Tensor] = []
        self._places: list[list[Any]] = []  # [flat key, start, shape, stride] of each tensor

    def pack(self, state: Any, plain: Collection[str] = ()) -> dict[str, Any]:
        """``state`` with its dense tensors copied into the flat ones; what ``unpack`` takes back.

        ``plain``: keys of a dict ``state`` whose values are kept as they are, not searched for
        tensors (a run's metrics rows: thousands of numbers, and a millisecond to search at every
        epoch). A tensor in one is saved on its own, as ``torch.save`` saves it.
        The flat tensors are overwritten by the next call: save the result before then.
        """
        tensors: list[torch.Tensor] = []

        def place(t: torch.Tensor) -> Any:
            if t.layout != torch.strided or t.is_quantized:
                return t  # pickled on its own, as torch.save does
            tensors.append(t)
            return {_PLACE: len(tensors) - 1}

        if isinstance(state, dict) and plain:
            tree = {k: v if k in plain else _walk(v, place) for k, v in state.items()}
        else:
            tree = _walk(state, place)
        layout = [(t.dtype, t.device, t.shape, t.stride()) for t in tensors]
        if layout != self._layout:
            self._lay_out(layout)
        if tensors:
            with torch.no_grad():
                torch._foreach_copy_(self._views, tensors)
        return {PACKED: 1, "flat": self._flat, "places": self._places, "tree": tree}

    def _lay_out(self, layout: list[tuple[Any, ...]]) -> None:
        sizes: dict[str, int] = {}
        kinds: dict[str, tuple[torch.dtype, torch.device]] = {}
        places: list[list[Any]] = []
        for dtype, device, shape, stride in layout:
            key = f"{dtype}@{device}".removeprefix("torch.")
            kinds[key] = (dtype, device)
            start = sizes.get(key, 0)
            places.append([key, start, list(shape), list(stride)])
            sizes[key] = start + _extent(list(shape), list(stride))
        self._flat = {k: torch.empty(n, dtype=kinds[k][0], device=kinds[k][1]) for k, n in sizes.items()}
        self._views = [self._flat[k].as_strided(shape, stride, start) for k, start, shape, stride in places]
        self._places, self._layout = places, layout


def is_packed(saved: Any) -> bool:
    """Whether ``saved`` (a loaded checkpoint) is what ``Packer.pack`` makes."""
    return isinstance(saved, dict) and PACKED in saved


def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def unpack(saved: dict[str, Any]) -> Any:
    """The state that was packed, each tensor a copy of its own in its saved layout;
    ValueError when a tensor's place does not fit the flat tensors (a damaged or planted file)."""
    if saved.get(PACKED) != 1:
        raise ValueError(f"packed in an unknown format {saved.get(PACKED)!r}")
    flat, places = saved.get("flat"), saved.get("places")
    if not isinstance(flat, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.dim() == 1 and v.layout == torch.strided
        for k, v in flat.items()
    ):
        raise ValueError("its packed tensors are not flat tensors by name")
    if not isinstance(places, list):
        raise ValueError("it does not say where its tensors lie")

    def take(i: Any) -> torch.Tensor:
        if not _is_count(i) or i >= len(places):
            raise ValueError("a packed tensor's place is missing")
        where = places[i]
        if not (isinstance(where, list) and len(where) == 4):
            raise ValueError("a packed tensor's place is malformed")
        key, start, shape, stride = where
        whole = flat.get(key) if isinstance(key, str) else None
        if (
            whole is None
            or not _is_count(start)
            or not (isinstance(shape, list) and isinstance(stride, list) and len(shape) == len(stride))
            or not all(_is_count(n) for n in shape + stride)
        ):
            raise ValueError("a packed tensor's place is malformed")
        if start + _extent(shape, stride) > whole.numel() or math.prod(shape) > whole.numel():
            raise ValueError(f"a packed tensor reaches past the end of {key!r}")
        return whole.as_strided(shape, stride, whole.storage_offset() + start).clone()

    def at_place(x: dict[str, Any]) -> torch.Tensor:
        if len(x) != 1:
            raise ValueError("a packed tensor's place is malformed")
        return take(x[_PLACE])

    # A tensor the packer left as it was (not dense) comes back as torch.load gave it.
    return _walk(saved.get("tree"), lambda t: t, at_place)
