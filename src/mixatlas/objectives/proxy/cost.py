"""Training FLOPs and MFU of a proxy: one formula for the benchmark JSON and each run's metrics.json `cost`.

Per sample of `n` real tokens (image tokens included), `m` supervised tokens and one image of `p` patches:

    6 * N_lm * n            LM weights, input embedding excluded (it is a lookup, not a matmul)
  + 6 * V * H * m           output head, counted for supervised tokens only: the others are never projected
  + 12 * L_lm * H * n^2     LM attention scores and values (PaLM appendix B convention: the full square,
                            causality not discounted), n = the sample's own length since packing keeps
                            attention inside each sample
  + 6 * N_vis * p + 12 * L_vis * H_vis * p^2     vision tower (+ projector) the same way.

MFU = those FLOPs per second / the accelerator's dense bf16 peak (989 TFLOP/s for an H100 / H200 SXM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ProxyFlops:
    """The sizes the FLOP count needs, read off a `LlavaForConditionalGeneration`."""

    lm_params: int  # LM decoder weights without the input embedding (and without a tied head)
    head_params: int  # V x H
    lm_layers: int
    lm_hidden: int
    vision_params: int  # vision tower + projector
    vision_layers: int
    vision_hidden: int
    patches: int  # vision tokens per image (CLS included)

    @classmethod
    def of(cls, model) -> ProxyFlops:
        inner = model.model
        embed = inner.language_model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        lm = sum(p.numel() for p in inner.language_model.parameters()) - embed.numel()
        vision = sum(p.numel() for p in inner.vision_tower.parameters())
        vision += sum(p.numel() for p in inner.multi_modal_projector.parameters())
        vc, tc = model.config.vision_config, model.config.text_config
        return cls(
            lm_params=int(lm),
            head_params=int(head.numel()),
            lm_layers=int(tc.num_hidden_layers),
            lm_hidden=int(tc.hidden_size),
            vision_params=int(vision),
            vision_layers=int(vc.num_hidden_layers),
            vision_hidden=int(vc.hidden_size),
            patches=(vc.image_size // vc.patch_size) ** 2 + 1,
        )

    def training_flops(self, lengths: list[int], supervised: int, images: int) -> float:
        """FLOPs of one forward + backward over samples of `lengths` tokens with `supervised` answer tokens
        and `images` images in all."""
        tokens = sum(lengths)
        squares = sum(n * n for n in lengths)
        lm = 6 * self.lm_params * tokens + 12 * self.lm_layers * self.lm_hidden * squares
        head = 6 * self.head_params * supervised
        vision = images * (6 * self.vision_params * self.patches
                           + 12 * self.vision_layers * self.vision_hidden * self.patches**2)
        return float(lm + head + vision)

    def to_dict(self) -> dict:
        return asdict(self)


# Dense bf16 peak TFLOP/s by device-name fragment (vendor datasheets, SXM parts); MFU is left out elsewhere.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device) -> float | None:
    """The dense bf16 peak of a CUDA `device` from `PEAK_BF16_TFLOPS`, None for the CPU or an unlisted GPU."""
    if getattr(device, "type", "cpu") != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS.items() if fragment in name), None)


def mfu(flops: float, seconds: float, peak_tflops: float) -> float:
    """Model FLOPs utilization: achieved FLOP/s over the peak."""
    return flops / seconds / (peak_tflops * 1e12)
