"""Proxy-trainer configuration (pydantic, YAML is the single source of truth) and its presets.

`preset: tiny` builds a ~1M-parameter random-init LLaVA (CLIP vision tower + Qwen2 LM) for CPUs, with a
byte-level BPE trained on the atlas text; `preset: custom` loads `vision` / `lm` hub ids or local paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mixatlas.errors import MixAtlasError
from mixatlas.yaml_io import safe_load


class TinyArch(BaseModel):
    """Sizes of the random-init tiny preset (vision tower, LM and BPE vocabulary)."""

    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(16, ge=2, description="CLIP patch size; (image_size/patch)^2 image tokens")
    vision_hidden: int = Field(64, ge=8)
    vision_layers: int = Field(2, ge=1)
    vision_heads: int = Field(4, ge=1)
    lm_hidden: int = Field(128, ge=16)
    lm_layers: int = Field(2, ge=1)
    lm_heads: int = Field(4, ge=1)
    lm_kv_heads: int = Field(2, ge=1)
    mlp_ratio: int = Field(4, ge=1, description="intermediate size = mlp_ratio x hidden, both towers")
    vocab_size: int = Field(1024, ge=300, description="byte-level BPE vocabulary (256 bytes + merges)")


class ProxyConfig(BaseModel):
    """Everything one proxy run needs besides the atlas, the mixture and the seed.

    `steps` optimizer steps of `batch_size x grad_accum` samples; `max_epochs` caps how often one cell's
    samples repeat over a run (see `data.cap_weights`); eval metrics per held-out benchmark.
    """

    model_config = ConfigDict(extra="forbid")

    preset: Literal["tiny", "custom"] = "tiny"
    vision: str | None = Field(None, description="CLIP vision hub id or local path (custom preset)")
    lm: str | None = Field(None, description="causal LM hub id or local path (custom preset)")
    tiny: TinyArch = Field(default_factory=TinyArch)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    image_size: int = Field(64, ge=8, description="tiny preset image side (custom: the vision config's)")
    max_len: int = Field(160, ge=8, description="tokens per sample, image tokens included")
    bf16: bool = False
    compile: bool = Field(False, description="torch.compile each transformer block (GPU runs)")
    pack_len: Annotated[int, Field(ge=8)] | Literal["auto"] | None = Field(
        "auto", description="pack samples into rows of this many tokens (>= max_len), attention kept per "
        "sample; None = one padded row each; 'auto' = max_len on CUDA, None on the CPU (see packing_length)")
    checkpointing: bool = Field(False, description="activation checkpointing (less memory, more compute)")
    eval_benchmarks: list[str] | None = Field(None, description="None = every *.jsonl in eval_dir")
    eval_dir: str | None = Field(None, description="None = <atlas corpus>/eval")
    eval_samples: int = Field(64, ge=1, description="samples per benchmark (the first ones in the file)")
    eval_generate: bool = Field(True, description="also greedy decoding for EM / ANLS / IoU")
    eval_max_new_tokens: int = Field(32, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    max_epochs: float = Field(4.0, gt=0)
    num_workers: int = Field(0, ge=0, description="DataLoader workers decoding images")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = 1 for tiny, else torch's")
    seed: int = 0

    @field_validator("pack_len", mode="before")
    @classmethod
    def _pack_len_word(cls, value):
        """'auto', an integer, or null (also spelled 'none' / 'null' / 'off', as a command line gives it)."""
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("none", "null", "off"):
                return None
            if word == "auto":
                return "auto"
            if not word.isdigit():
                raise ValueError(f"{value!r} is not a row length: give an integer >= max_len, 'auto' or null")
            return int(word)
        return value

    @model_validator(mode="after")
    def _check_preset(self) -> ProxyConfig:
        if self.preset == "custom" and not (self.vision and self.lm):
            raise ValueError("preset 'custom' needs both `vision` and `lm` (hub ids or local paths)")
        if self.preset == "tiny" and (self.vision or self.lm):
            raise ValueError("`vision` / `lm` are only used with preset 'custom'")
        if self.preset == "tiny" and self.image_size % self.tiny.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of tiny.patch_size")
        if isinstance(self.pack_len, int) and self.pack_len < self.max_len:
            raise ValueError(f"pack_len {self.pack_len} < max_len {self.max_len}: a packed row must hold a "
                             "whole sample (use null for padded rows, or 'auto')")
        return self

    @classmethod
    def from_yaml(cls, path: Path | str) -> ProxyConfig:
        """Read a YAML mapping of the fields above; errors name the file and the field."""
        try:
            data = safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            problem = str(exc).splitlines()[0]
            raise MixAtlasError(f"{path}: cannot read proxy config YAML ({problem})") from None
        if not isinstance(data, dict):
            raise MixAtlasError(f"{path}: a proxy config is a YAML mapping of field: value")
        return cls.from_dict(data, origin=str(path))

    @classmethod
    def from_dict(cls, data: dict, origin: str = "proxy config") -> ProxyConfig:
        """Validate a plain mapping; a pydantic error becomes one MixAtlasError line."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "config"
            raise MixAtlasError(f"{origin}: {where}: {first['msg']}; see examples/proxy.yaml") from None

    def to_yaml(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(), sort_keys=False))

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    def packing_length(self, device_type: str) -> int | None:
        """Tokens per packed training row on a `device_type` ("cuda", "cpu", ...), None = padded rows.

        `pack_len: auto` packs on CUDA into rows of `max_len` tokens (first-fit: shorter samples share a row,
        so a micro-batch never needs more rows, nor more memory, than its padded layout) and leaves packing
        off elsewhere: on a CPU the block-diagonal mask costs more than the padding it saves. An integer or
        null is used as given on every device.
        """
        if self.pack_len == "auto":
            return self.max_len if device_type == "cuda" else None
        return self.pack_len

    @property
    def cpu_threads(self) -> int | None:
        """Threads for torch on CPU. The tiny preset's matmuls are too small to gain from more than one,
        and extra threads spin against other trials sharing the CPU (measured: 2 threads 3-10x slower)."""
        if self.threads is not None:
            return self.threads
        return 1 if self.preset == "tiny" else None
