"""What a model is, checked without building it: the architecture spec and its rules.

No torch here, so a config is checked (and a bad one refused) before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VARIANTS = ("plain", "residual")
SHORTCUTS = ("A", "B", "C")
NORMS = ("batch", "none")
BLOCKS = ("post", "pre")
FAMILIES = ("cnn", "mlp")
# Each cure for degradation (configs/cure/) and the variants it is defined for: the cures that
# train deep nets without a shortcut are for plain nets, those that train residual nets without
# BN are for residual ones. ``none`` is the nets as He et al. built them.
CURES = {
    "none": ("plain", "residual"),
    "tat": ("plain",),
    "delta_orthogonal": ("plain",),
    "looks_linear": ("plain",),
    "fixup": ("residual",),
    "skipinit": ("residual",),
}
# The activation each cure's paper builds it with (``cure.activation`` records it).
CURE_ACTIVATIONS = {
    "tat": "leaky_relu",
    "delta_orthogonal": "tanh",
    "looks_linear": "crelu",
    "fixup": "relu",
    "skipinit": "relu",
}
# How the docs and verdicts name them.
CURE_NAMES = {
    "none": "no cure",
    "tat": "TAT",
    "delta_orthogonal": "delta-orthogonal",
    "looks_linear": "looks-linear",
    "fixup": "Fixup",
    "skipinit": "SkipInit",
}


class ModelError(ValueError):
    """A model setting a user chose that cannot be built."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides a model's architecture."""

    family: str = "cnn"
    depth: int = 20
    variant: str = "residual"
    shortcut: str = "A"
    norm: str = "batch"
    block: str = "post"
    zero_init_residual: bool | None = None
    width: int = 16
    cure: str = "none"
    # The cure's settings (its config node less its name); they do not take part in equality.
    cure_options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def residual(self) -> bool:
        return self.variant == "residual"

    @property
    def zero_init(self) -> bool:
        """Zero-init each block's last layer; by default only for residual MLPs without BN."""
        if self.zero_init_residual is not None:
            return bool(self.zero_init_residual)
        return self.family == "mlp" and self.residual and self.norm == "none"


def valid_cnn_depths(up_to: int = 110) -> list[int]:
    """Depths 6n+2 the CIFAR network accepts, up to ``up_to``."""
    return [6 * n + 2 for n in range(1, (up_to - 2) // 6 + 1)]


def check_spec(spec: ModelSpec) -> None:
    """Raise ModelError with one clear line when ``spec`` cannot be built."""
    if spec.family not in FAMILIES:
        raise ModelError(f"unknown model family {spec.family!r}; choose one of {', '.join(FAMILIES)}")
    if spec.variant not in VARIANTS:
        raise ModelError(f"unknown variant {spec.variant!r}; choose one of {', '.join(VARIANTS)}")
    if spec.shortcut not in SHORTCUTS:
        raise ModelError(f"unknown shortcut {spec.shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
    if spec.norm not in NORMS:
        raise ModelError(f"unknown norm {spec.norm!r}; choose one of {', '.join(NORMS)}")
    if spec.block not in BLOCKS:
        raise ModelError(f"unknown block {spec.block!r}; choose one of {', '.join(BLOCKS)}")
    if spec.width < 1:
        raise ModelError(f"model.width must be positive, got {spec.width}")
    depth = spec.depth
    if spec.family == "cnn":
        if depth < 8 or (depth - 2) % 6:
            shown = ", ".join(str(d) for d in valid_cnn_depths(56))
            raise ModelError(f"cnn depth must be 6n+2 with n >= 1 ({shown}, 110, ...), got {depth}")
    elif depth < 4 or depth % 2:
        raise ModelError(f"mlp depth must be an even number of weight layers >= 4, got {depth}")
    check_cure(spec)


def cure_applies(cure: str, variant: str) -> bool:
    """Whether ``cure`` is defined for ``variant`` nets (an unknown cure or variant: False)."""
    return variant in CURES.get(cure, ())


def check_cure(spec: ModelSpec) -> None:
    """Raise ModelError with one line when the spec's cure cannot be built as asked."""
    cure = spec.cure
    if cure not in CURES:
        raise ModelError(f"unknown cure {cure!r}; choose one of {', '.join(CURES)}")
    if cure == "none":
        return
    if not cure_applies(cure, spec.variant):
        which = " and ".join(CURES[cure])
        raise ModelError(
            f"cure={cure} applies to {which} nets only, not model.variant={spec.variant}; "
            f"choose model.variant={CURES[cure][0]} (--variants in a sweep)"
        )
    if spec.norm != "none":
        raise ModelError(f"cure={cure} trains without BN; model.norm={spec.norm} cannot be combined with it")
    if spec.block != "post":
        raise ModelError(
            f"cure={cure} is built on the 2015 block (model.block=post), not model.block={spec.block}"
        )
    if spec.zero_init_residual:
        raise ModelError(f"cure={cure} sets its own initialisation; leave model.zero_init_residual unset")
    act = spec.cure_options.get("activation", CURE_ACTIVATIONS[cure])
    if act != CURE_ACTIVATIONS[cure]:
        raise ModelError(
            f"cure={cure} is built with {CURE_ACTIVATIONS[cure]} (its paper's); cure.activation={act} is not"
        )


def stage_sizes(blocks: int, stages: int = 3) -> list[int]:
    """Split ``blocks`` over at most ``stages`` stages, the earlier ones taking any extra."""
    stages = min(stages, blocks)
    base, extra = divmod(blocks, stages)
    return [base + (1 if i < extra else 0) for i in range(stages)]


def model_spec(cfg: Any) -> ModelSpec:
    """The architecture a config's ``model`` node describes."""
    m = cfg.model
    # Runs recorded before cures existed have no ``cure`` node: they are today's nets.
    cure = cfg.get("cure") if hasattr(cfg, "get") else None
    node = dict(cure) if cure is not None else {}
    return ModelSpec(
        family=m.family,
        depth=int(m.depth),
        variant=m.variant,
        shortcut=str(m.shortcut),
        norm=m.norm,
        block=m.block,
        zero_init_residual=m.zero_init_residual,
        width=int(m.width),
        cure=str(node.get("name", "none")),
        cure_options={k: v for k, v in node.items() if k != "name"},
    )
