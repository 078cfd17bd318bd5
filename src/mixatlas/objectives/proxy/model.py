"""The LLaVA-style proxy: `transformers.LlavaForConditionalGeneration` = CLIP vision tower + projector + LM.

Built from configs for the tiny preset (random init, ~1M parameters) and the GPU benchmark, or from
pretrained `--vision` (CLIPVisionModel) and `--lm` (AutoModelForCausalLM) hub ids / local paths with a
fresh projector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.proxy.config import ProxyConfig, TinyArch
from mixatlas.objectives.proxy.tokenizer import ChatFormat, cached_bpe_tokenizer, hub_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FEATURE_LAYER = -1  # the last vision layer: with 2-layer tiny towers the penultimate one is too shallow


@dataclass
class ProxyModel:
    """A proxy ready to train or evaluate: the Llava model, its chat format and its square image side."""

    model: object  # transformers.LlavaForConditionalGeneration (imported lazily)
    chat: ChatFormat
    image_size: int


def llava_from_configs(vision_config, text_config, image_token_id: int):
    """A random-init `LlavaForConditionalGeneration`; one image token per vision patch (CLS dropped)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=patches,
        vision_feature_layer=FEATURE_LAYER,
        vision_feature_select_strategy="default",
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    model = LlavaForConditionalGeneration(config)
    # Features come from the hidden states, so the pooled-output norm never reaches the loss; frozen so
    # DDP does not wait for its gradient.
    for name, module in model.model.vision_tower.named_modules():
        if name.endswith("post_layernorm"):
            module.requires_grad_(False)
    return model


def transformer_blocks(model) -> list:
    """The repeated blocks of both towers of a `LlavaForConditionalGeneration`: vision encoder layers, then
    LM decoder layers."""
    inner = model.model
    vision = inner.vision_tower
    encoder = vision.encoder if hasattr(vision, "encoder") else vision.vision_model.encoder
    return [*encoder.layers, *inner.language_model.layers]


def compile_blocks(model) -> None:
    """`torch.compile` each transformer block in place. Identical blocks share one compiled graph, so a
    24 + 24-layer proxy compiles in about the time of one layer pair, not of the whole unrolled model; the
    glue around them (image scatter, mask building, the loss) stays eager."""
    for block in transformer_blocks(model):
        block.compile()


def tiny_configs(arch: TinyArch, image_size: int, vocab_size: int, max_len: int):
    """(CLIPVisionConfig, Qwen2Config) of the tiny preset."""
    from transformers import CLIPVisionConfig, Qwen2Config

    vision = CLIPVisionConfig(
        hidden_size=arch.vision_hidden,
        intermediate_size=arch.mlp_ratio * arch.vision_hidden,
        num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads,
        image_size=image_size,
        patch_size=arch.patch_size,
    )
    text = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=arch.lm_hidden,
        intermediate_size=arch.mlp_ratio * arch.lm_hidden,
        num_hidden_layers=arch.lm_layers,
        num_attention_heads=arch.lm_heads,
        num_key_value_heads=arch.lm_kv_heads,
        max_position_embeddings=max(256, 2 * max_len),
        tie_word_embeddings=True,
    )
    return vision, text


def build_tiny_proxy(config: ProxyConfig, atlas_dir: Path, conversations_json) -> ProxyModel:
    """Tiny preset: BPE from the atlas text (cached in the atlas), random-init CLIP + Qwen2 towers.

    Call `torch.manual_seed` first: the initial weights come from torch's global generator.
    """
    tokenizer = cached_bpe_tokenizer(atlas_dir, conversations_json, config.tiny.vocab_size)
    vision, text = tiny_configs(config.tiny, config.image_size, len(tokenizer), config.max_len)
    image_seq_length = (config.image_size // config.tiny.patch_size) ** 2
    chat = ChatFormat(tokenizer, image_seq_length)
    return ProxyModel(llava_from_configs(vision, text, chat.image_id), chat, config.image_size)


def load_pretrained_proxy(vision: str, lm: str) -> ProxyModel:
    """Custom preset: pretrained CLIP vision tower and causal LM (hub ids or local paths), fresh projector."""
    from transformers import AutoModelForCausalLM, CLIPVisionModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one the user watches
    try:
        vision_model = CLIPVisionModel.from_pretrained(vision)
    except (OSError, ValueError) as exc:
        raise MixAtlasError(f"--vision {vision}: cannot load a CLIP vision model ({exc})") from None
    try:
        lm_model = AutoModelForCausalLM.from_pretrained(lm)
    except (OSError, ValueError) as exc:
        raise MixAtlasError(f"--lm {lm}: cannot load a causal LM ({exc})") from None
    tokenizer = hub_tokenizer(lm)
    if len(tokenizer) > lm_model.config.vocab_size:
        lm_model.resize_token_embeddings(len(tokenizer))
    vision_config = vision_model.config
    chat = ChatFormat(tokenizer, (vision_config.image_size // vision_config.patch_size) ** 2)
    model = llava_from_configs(vision_config, lm_model.config, chat.image_id)
    model.model.vision_tower.load_state_dict(vision_model.state_dict())
    model.model.language_model.load_state_dict(lm_model.get_decoder().state_dict())
    model.lm_head.load_state_dict(lm_model.get_output_embeddings().state_dict())
    return ProxyModel(model, chat, vision_config.image_size)


def load_saved_proxy(model_dir: Path) -> ProxyModel:
    """A proxy written by `train_proxy(..., save_model=True)` (`model/` with weights and tokenizer)."""
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    if not (Path(model_dir) / "config.json").exists():
        raise MixAtlasError(f"{model_dir}: no saved proxy (config.json); train with --save-model")
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vision_config = model.config.vision_config
    chat = ChatFormat(tokenizer, model.config.image_seq_length)
    return ProxyModel(model, chat, vision_config.image_size)
