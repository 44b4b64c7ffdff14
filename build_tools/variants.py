"""Read kernels/variants.toml and expand it into the list of variants to compile."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tomllib

DTYPE_TRITON = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}
# fp32 must be fp32-accurate: IEEE products, never TF32; 16-bit inputs ignore the setting.
INPUT_PRECISION = {"fp16": "tf32", "bf16": "tf32", "fp32": "ieee"}
BLOCK_KEYS = ("BLOCK_M", "BLOCK_N")


@dataclasses.dataclass(frozen=True)
class Variant:
    op: str
    source: str
    kernel: str
    grid: str
    dtype: str
    head_dim: int
    arch: int
    flavor: str
    blocks: tuple[tuple[str, int], ...]
    constexprs: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return f"{self.op}_{self.dtype}_d{self.head_dim}_{self.flavor}_sm{self.arch}"

    @property
    def block(self) -> dict[str, int]:
        return dict(self.blocks)

    def as_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = dict(self.blocks)
        d["constexprs"] = dict(self.constexprs)
        return d


@dataclasses.dataclass(frozen=True)
class Spec:
    variants: list[Variant]
    abi: dict
    ops: dict  # op name -> op table (source, kernel, grid, ...)
    archs: list[int]


def _pick_config(op: str, configs: list[dict], arch: int, dtype: str) -> dict:
    for cfg in configs:
        if cfg.get("arch", arch) == arch and dtype in cfg.get("dtypes", [dtype]):
            return cfg
    raise ValueError(f"variants.toml: op {op!r} has no config for arch {arch} dtype {dtype}")


def load(path: Path, only_ops: set[str] | None = None) -> Spec:
    data = tomllib.loads(Path(path).read_text())
    variants = []
    for op, table in data["ops"].items():
        if only_ops is not None and op not in only_ops:
            continue
        for arch in data["archs"]:
            for dtype in data["dtypes"]:
                cfg = _pick_config(op, table["configs"], arch, dtype)
                blocks = tuple((k, int(cfg[k])) for k in BLOCK_KEYS if k in cfg)
                for head_dim in data["head_dim_buckets"]:
                    for flavor in table["flavors"]:
                        variants.append(Variant(
                            op=op, source=table["source"], kernel=table["kernel"],
                            grid=table["grid"], dtype=dtype, head_dim=int(head_dim), arch=int(arch),
                            flavor=flavor, blocks=blocks,
                            constexprs=tuple(sorted(table.get("constexprs", {}).items())),
                            num_warps=int(cfg["num_warps"]), num_stages=int(cfg["num_stages"]),
                        ))
    return Spec(variants=variants, abi=data["abi"], ops=data["ops"], archs=list(data["archs"]))
