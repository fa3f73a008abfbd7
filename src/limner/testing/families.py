"""Tiny random-weight diffusers pipelines of each model family we serve, built offline.

`build_family(name, folder)` saves a pipeline with `save_pretrained` into `folder/name`, laid
out as a user's saved model folder is (model_index.json, one subfolder per component), so that
loaders can be tested against every family without the hub. Every model is tiny (hidden sizes
of 16 to 64, one or two layers, where the pipeline hard-codes deeper text-encoder layers just
enough of them), so a family builds in seconds and a 1-step draw at 128x128 takes a fraction
of a second on a CPU; the latent layouts (channels, VAE scale factor, patching) are the real
ones, so any size the real model takes (1024x1024 included) works, only slower.

Tokenizers are made on the spot, as `tiny_pipeline.clip_tokenizer` does for CLIP: a vocabulary
of single characters or bytes (no merges) in the family's own tokenizer class, with the special
tokens and the chat template the pipeline needs.

Two processors cannot be built, saved or loaded where torchvision is missing (as here):
`PixtralProcessor` (FLUX.2's `tokenizer`: the module imports torchvision at its top) and
`Qwen2VLProcessor` (Qwen-Image-Edit's `processor`: it always loads a `Qwen2VLVideoProcessor`,
which requires torchvision, whatever the folder holds). Their folders are therefore written by
hand, as on the Hub (plain `DiffusionPipeline.from_pretrained` of them fails here, as it does
for the real folders), `slow_components(folder)` builds torchvision-free stand-ins, and
`load_pipeline(folder, **kwargs)` loads any folder, ours or the Hub's, with them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from limner.engines.diffusers import processors
from limner.testing.tiny_pipeline import _byte_symbols, clip_tokenizer

FAMILIES: tuple[str, ...] = (
    "sd15", "sd2", "sdxl", "sd3", "flux", "flux-kontext", "flux2", "flux2-klein", "qwen-image",
    "qwen-image-edit", "qwen-image-edit-plus", "z-image", "sana", "sana-sprint", "pixart-sigma",
    "lcm",
)

# Printable ASCII: the character vocabulary of the SentencePiece-style tokenizers (T5).
_ASCII = [chr(c) for c in range(33, 127)]

# Qwen2 / Qwen2.5-VL / Qwen3 special tokens, in the order of the real vocabulary's tail.
_QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
]

# Qwen's chat format; `enable_thinking=False` adds the empty think block as Qwen3's own does.
_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- else -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}{%- endif -%}"
)

# Mistral (FLUX.2's Mistral-Small-3.1) special tokens and chat format.
_MISTRAL_SPECIALS = ["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]",
                     "[IMG_BREAK]", "[IMG_END]"]
_MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{{- '[SYSTEM_PROMPT]' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '[INST]' -}}{%- endif -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- else -%}{{- '[IMG]' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if message['role'] == 'system' -%}{{- '[/SYSTEM_PROMPT]' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '[/INST]' -}}"
    "{%- else -%}{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)

_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


# --------------------------------------------------------------------------- tokenizers


def _t5_tokenizer() -> Any:
    """T5's Unigram over single characters: `<pad>`=0, `</s>`=1, `<unk>`=2, as the real one."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in _ASCII] + [("▁" + c, -2.5) for c in _ASCII]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _qwen_tokenizer(max_length: int = 32768) -> Any:
    """Qwen2's byte-level BPE with no merges, its special tokens and a chat template."""
    from transformers import Qwen2Tokenizer

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=[], eos_token="<|im_end|>",
        pad_token="<|endoftext|>", additional_special_tokens=_QWEN_SPECIALS[1:],
        model_max_length=max_length,
    )
    tokenizer.add_tokens(["<|endoftext|>", *_QWEN_SPECIALS[1:]], special_tokens=True)
    tokenizer.chat_template = _QWEN_CHAT_TEMPLATE
    return tokenizer


def _byte_fallback_vocab(specials: list[str]) -> dict[str, int]:
    """Specials, then the 256 `<0xNN>` byte tokens, then `▁` and printable ASCII."""
    tokens = [*specials, *(f"<0x{b:02X}>" for b in range(256)), "▁", *_ASCII]
    return {t: i for i, t in enumerate(tokens)}


def _gemma_tokenizer() -> Any:
    """Gemma's byte-fallback BPE: `<pad>`=0, `<eos>`=1, `<bos>`=2 (prepended), as the real one."""
    from transformers import GemmaTokenizer

    vocab = _byte_fallback_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
    return GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True, model_max_length=8192)


def _mistral_tokenizer() -> Any:
    """Mistral's byte-fallback BPE (`<unk>`=0, `<s>`=1, `</s>`=2) with its chat tokens."""
    from transformers import LlamaTokenizer

    vocab = _byte_fallback_vocab(["<unk>", "<s>", "</s>", "<pad>", *_MISTRAL_SPECIALS])
    tokenizer = LlamaTokenizer(
        vocab=vocab, merges=[], unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", add_prefix_space=False, model_max_length=131072,
    )
    tokenizer.add_tokens(_MISTRAL_SPECIALS, special_tokens=True)
    tokenizer.chat_template = _MISTRAL_CHAT_TEMPLATE
    return tokenizer


def _clip_tokenizer(tmp: Path, tag: str) -> Any:
    return clip_tokenizer(tmp / f"clip-{tag}")


# --------------------------------------------------------------------------- text encoders


def _clip(with_projection: bool = False, hidden: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=hidden, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, pad_token_id=1,
        vocab_size=1000, hidden_act="gelu", projection_dim=32,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config)


def _t5(d_model: int, vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        dropout_rate=0.0,
    ))


def _qwen3(tokenizer: Any, layers: int, causal_lm: bool) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=16, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config)


def _qwen25_vl(tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                "mrope_section": [1, 1, 2]},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
            "out_hidden_size": 16, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _mistral3(tokenizer: Any, layers: int) -> Any:
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    specials = {
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Mistral3Config(
        text_config={
            "model_type": "mistral", "vocab_size": len(tokenizer), "hidden_size": 16,
            "intermediate_size": 37, "max_position_embeddings": 4096, "num_attention_heads": 4,
            "num_hidden_layers": layers, "num_key_value_heads": 2, "head_dim": 4,
            "rms_norm_eps": 1e-05, "sliding_window": None,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000000.0}, **specials,
        },
        vision_config={
            "model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 4, "intermediate_size": 37, "image_size": 1540,
            "patch_size": 14, "num_channels": 3, "head_dim": 4,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2,
        vision_feature_layer=-1, tie_word_embeddings=False,
    )
    return Mistral3ForConditionalGeneration(config).eval()


def _gemma2(tokenizer: Any) -> Any:
    from transformers import Gemma2Config, Gemma2Model

    return Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8,
        max_position_embeddings=8192, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    ))


# --------------------------------------------------------------------------- autoencoders


def _vae_kl(latent_channels: int, scaling_factor: float, shift_factor: float | None = None,
            quant_conv: bool = True, force_upcast: bool = False) -> Any:
    """An `AutoencoderKL` with four blocks, so 8x downsampling as the real ones."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[4, 8, 8, 8],
        layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4,
        sample_size=128, scaling_factor=scaling_factor, shift_factor=shift_factor,
        use_quant_conv=quant_conv, use_post_quant_conv=quant_conv, force_upcast=force_upcast,
        mid_block_add_attention=False,
    )


def _sd_vae(scaling_factor: float = 0.18215, force_upcast: bool = False) -> Any:
    return _vae_kl(4, scaling_factor, force_upcast=force_upcast)


def _flux_vae() -> Any:
    """FLUX.1's 16-channel VAE (also Z-Image's)."""
    return _vae_kl(16, 0.3611, 0.1159, quant_conv=False)


def _flux2_vae() -> Any:
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 8, 8, 8),
        layers_per_block=1, latent_channels=32, norm_num_groups=4, sample_size=128,
        use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=False,
    )


def _qwen_vae() -> Any:
    from diffusers import AutoencoderKLQwenImage

    return AutoencoderKLQwenImage(
        base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * 16, latents_std=[1.0] * 16,
    )


def _dc_vae() -> Any:
    """Sana's deep-compression autoencoder: 32 channels, 32x downsampling."""
    from diffusers import AutoencoderDC

    # The deepest blocks need at least the latent's 32 channels: the encoder's output and the
    # decoder's input shortcuts fold and repeat channels by whole multiples.
    blocks = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    return AutoencoderDC(
        in_channels=3, latent_channels=32, attention_head_dim=8, encoder_block_types=blocks,
        decoder_block_types=blocks, encoder_block_out_channels=(8, 8, 16, 16, 32, 32),
        decoder_block_out_channels=(8, 8, 16, 16, 32, 32),
        encoder_layers_per_block=(1, 1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1, 1),
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        upsample_block_type="interpolate", downsample_block_type="conv",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )


# --------------------------------------------------------------------------- schedulers


def _sd_betas() -> dict[str, Any]:
    return {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000}


def _flow_scheduler(**config: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def _flux_scheduler() -> Any:
    return _flow_scheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                           base_image_seq_len=256, max_image_seq_len=4096)


def _qwen_scheduler() -> Any:
    return _flow_scheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                           base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                           time_shift_type="exponential")


# --------------------------------------------------------------------------- denoisers


def _sd_unet(cross_attention_dim: int = 32, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=32, **extra,
    )


def _flux_transformer(in_channels: int, joint_attention_dim: int) -> Any:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=in_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=joint_attention_dim,
        pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=[4, 6, 6],
    )


def _flux2_transformer(joint_attention_dim: int, guidance_embeds: bool) -> Any:
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=joint_attention_dim,
        timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )


def _qwen_transformer() -> Any:
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


# --------------------------------------------------------------------------- families


def _sd(target: Path, tmp: Path, v_prediction: bool) -> None:
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline

    scheduler: Any
    if v_prediction:  # SD 2.x 768-v: DDIM, v-prediction, linear-projection attention.
        scheduler = DDIMScheduler(**_sd_betas(), clip_sample=False, set_alpha_to_one=False,
                                  steps_offset=1, prediction_type="v_prediction")
    else:
        scheduler = PNDMScheduler(**_sd_betas(), skip_prk_steps=True, steps_offset=1,
                                  set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=_sd_vae(), text_encoder=_clip(), tokenizer=_clip_tokenizer(tmp, "1"),
        unet=_sd_unet(use_linear_projection=v_prediction), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(target)


def _sd15(target: Path, tmp: Path) -> None:
    _sd(target, tmp, v_prediction=False)


def _sd2(target: Path, tmp: Path) -> None:
    _sd(target, tmp, v_prediction=True)


def _lcm(target: Path, tmp: Path) -> None:
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    pipe = LatentConsistencyModelPipeline(
        vae=_sd_vae(), text_encoder=_clip(), tokenizer=_clip_tokenizer(tmp, "1"),
        unet=_sd_unet(time_cond_proj_dim=32),
        scheduler=LCMScheduler(**_sd_betas(), clip_sample=False, set_alpha_to_one=True,
                               original_inference_steps=50),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(target)


def _sdxl(target: Path, tmp: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    # Two CLIP encoders (32 + 32 = 64 = cross_attention_dim); added-time embedding takes 6
    # size/crop numbers of 8 channels each plus text_encoder_2's 32-channel pooled projection.
    unet = _sd_unet(
        cross_attention_dim=64, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
        attention_head_dim=(2, 4), transformer_layers_per_block=(1, 1),
    )
    pipe = StableDiffusionXLPipeline(
        vae=_sd_vae(0.13025, force_upcast=True), text_encoder=_clip(),
        text_encoder_2=_clip(with_projection=True), tokenizer=_clip_tokenizer(tmp, "1"),
        tokenizer_2=_clip_tokenizer(tmp, "2"), unet=unet,
        scheduler=EulerDiscreteScheduler(**_sd_betas(), steps_offset=1,
                                         timestep_spacing="leading"),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    pipe.save_pretrained(target)


def _sd3(target: Path, tmp: Path) -> None:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    # The two CLIPs' hidden states (32 + 32) are zero-padded up to T5's width (64).
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
        joint_attention_dim=64, pooled_projection_dim=64, pos_embed_max_size=96,
    )
    t5_tokenizer = _t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=_flow_scheduler(shift=3.0),
        vae=_vae_kl(16, 1.5305, 0.0609, quant_conv=False),
        text_encoder=_clip(with_projection=True), tokenizer=_clip_tokenizer(tmp, "1"),
        text_encoder_2=_clip(with_projection=True), tokenizer_2=_clip_tokenizer(tmp, "2"),
        text_encoder_3=_t5(64, len(t5_tokenizer)), tokenizer_3=t5_tokenizer,
        image_encoder=None, feature_extractor=None,
    )
    pipe.save_pretrained(target)


def _flux_components(tmp: Path) -> dict[str, Any]:
    t5_tokenizer = _t5_tokenizer()
    return {
        "scheduler": _flux_scheduler(), "vae": _flux_vae(), "text_encoder": _clip(),
        "tokenizer": _clip_tokenizer(tmp, "1"), "text_encoder_2": _t5(32, len(t5_tokenizer)),
        "tokenizer_2": t5_tokenizer, "transformer": _flux_transformer(64, 32),
        "image_encoder": None, "feature_extractor": None,
    }


def _flux(target: Path, tmp: Path) -> None:
    from diffusers import FluxPipeline

    FluxPipeline(**_flux_components(tmp)).save_pretrained(target)


def _flux_kontext(target: Path, tmp: Path) -> None:
    from diffusers import FluxKontextPipeline

    FluxKontextPipeline(**_flux_components(tmp)).save_pretrained(target)


def _flux2(target: Path, tmp: Path) -> None:
    from diffusers import Flux2Pipeline

    # The pipeline stacks the Mistral's hidden states 10, 20 and 30: 31 layers of 16 channels.
    tokenizer = _mistral_tokenizer()
    pipe = Flux2Pipeline(
        scheduler=_flux_scheduler(), vae=_flux2_vae(), text_encoder=_mistral3(tokenizer, 30),
        tokenizer=None, transformer=_flux2_transformer(3 * 16, guidance_embeds=True),
    )
    pipe.save_pretrained(target)
    _write_pixtral_processor(target / "tokenizer", tokenizer)
    _set_component(target, "tokenizer", "PixtralProcessor")


def _flux2_klein(target: Path, tmp: Path) -> None:
    from diffusers import Flux2KleinPipeline

    # Hidden states 9, 18 and 27 are stacked: 28 layers. Step-distilled, as the released 4B.
    tokenizer = _qwen_tokenizer(max_length=40960)
    pipe = Flux2KleinPipeline(
        scheduler=_flux_scheduler(), vae=_flux2_vae(),
        text_encoder=_qwen3(tokenizer, 28, causal_lm=True), tokenizer=tokenizer,
        transformer=_flux2_transformer(3 * 16, guidance_embeds=False), is_distilled=True,
    )
    pipe.save_pretrained(target)


def _qwen_image(target: Path, tmp: Path) -> None:
    from diffusers import QwenImagePipeline

    tokenizer = _qwen_tokenizer()
    pipe = QwenImagePipeline(
        scheduler=_qwen_scheduler(), vae=_qwen_vae(), text_encoder=_qwen25_vl(tokenizer),
        tokenizer=tokenizer, transformer=_qwen_transformer(),
    )
    pipe.save_pretrained(target)


def _qwen_edit(target: Path, plus: bool) -> None:
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    cls: Any = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    tokenizer = _qwen_tokenizer()
    pipe = cls(
        scheduler=_qwen_scheduler(), vae=_qwen_vae(), text_encoder=_qwen25_vl(tokenizer),
        tokenizer=tokenizer, processor=None, transformer=_qwen_transformer(),
    )
    pipe.save_pretrained(target)
    _write_qwen2vl_processor(target / "processor", tokenizer)
    _set_component(target, "processor", "Qwen2VLProcessor")


def _qwen_image_edit(target: Path, tmp: Path) -> None:
    _qwen_edit(target, plus=False)


def _qwen_image_edit_plus(target: Path, tmp: Path) -> None:
    _qwen_edit(target, plus=True)


def _z_image(target: Path, tmp: Path) -> None:
    from diffusers import ZImagePipeline, ZImageTransformer2DModel

    tokenizer = _qwen_tokenizer(max_length=40960)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True,
        cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4],
        axes_lens=[1536, 512, 512],
    )
    with torch.no_grad():  # made with torch.empty: fix them, or they may hold NaNs
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    pipe = ZImagePipeline(
        scheduler=_flow_scheduler(shift=3.0), vae=_flux_vae(),
        text_encoder=_qwen3(tokenizer, 2, causal_lm=False), tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(target)


def _sana(target: Path, tmp: Path) -> None:
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel

    # sample_size 16 (512 px): the pipeline's resolution binning knows 16, 32, 64 and 128 only.
    tokenizer = _gemma_tokenizer()
    transformer = SanaTransformer2DModel(
        in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=8,
        num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8,
        cross_attention_dim=16, caption_channels=16, sample_size=16, patch_size=1,
    )
    scheduler = DPMSolverMultistepScheduler(
        flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction",
        solver_order=2, algorithm_type="dpmsolver++",
    )
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=_gemma2(tokenizer), vae=_dc_vae(),
                        transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(target)


def _sana_sprint(target: Path, tmp: Path) -> None:
    from diffusers import SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler

    # sample_size 32 (1024 px), the only one its pipeline's resolution binning knows. As
    # Sana-Sprint's own: guidance embedded (its scale 0.1), RMS norms across heads on the
    # queries and keys, a timestep scale, and the SCM scheduler's trigonometric flow.
    tokenizer = _gemma_tokenizer()
    transformer = SanaTransformer2DModel(
        in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=8,
        num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8,
        cross_attention_dim=16, caption_channels=16, sample_size=32, patch_size=1,
        guidance_embeds=True, guidance_embeds_scale=0.1, qk_norm="rms_norm_across_heads",
        timestep_scale=1000.0,
    )
    pipe = SanaSprintPipeline(tokenizer=tokenizer, text_encoder=_gemma2(tokenizer),
                              vae=_dc_vae(), transformer=transformer,
                              scheduler=SCMScheduler(prediction_type="trigflow", sigma_data=0.5))
    pipe.save_pretrained(target)


def _pixart_sigma(target: Path, tmp: Path) -> None:
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    # sample_size 64 (512 px): the pipeline's resolution binning knows 64, 128 and 256 only.
    tokenizer = _t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        sample_size=64, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02,
                                            beta_schedule="linear")
    pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=_t5(32, len(tokenizer)),
                               vae=_sd_vae(0.13025), transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(target)


_BUILDERS: dict[str, Callable[[Path, Path], None]] = {
    "sd15": _sd15, "sd2": _sd2, "sdxl": _sdxl, "sd3": _sd3, "flux": _flux,
    "flux-kontext": _flux_kontext, "flux2": _flux2, "flux2-klein": _flux2_klein,
    "qwen-image": _qwen_image, "qwen-image-edit": _qwen_image_edit,
    "qwen-image-edit-plus": _qwen_image_edit_plus, "z-image": _z_image, "sana": _sana,
    "sana-sprint": _sana_sprint,
    "pixart-sigma": _pixart_sigma, "lcm": _lcm,
}


# --------------------------------------------------------------------------- processors


def _set_component(target: Path, name: str, class_name: str) -> None:
    index_path = target / "model_index.json"
    index = json.loads(index_path.read_text())
    index[name] = ["transformers", class_name]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_qwen2vl_processor(folder: Path, tokenizer: Any) -> None:
    """Qwen-Image-Edit's `processor/` as on the Hub: the tokenizer's files, the chat template,
    `preprocessor_config.json` and `video_preprocessor_config.json` (legacy min/max pixel keys
    as Qwen2.5-VL has them; `max_pixels` is lowered to 512x512 to keep the tiny one quick)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(_QWEN_CHAT_TEMPLATE)
    common = {
        "min_pixels": 3136, "max_pixels": 512 * 512,
        "size": {"shortest_edge": 3136, "longest_edge": 512 * 512}, "do_resize": True,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True, "resample": 3, "patch_size": 14, "temporal_patch_size": 2,
        "merge_size": 2, "image_mean": _IMAGE_MEAN, "image_std": _IMAGE_STD,
        "processor_class": "Qwen2VLProcessor",
    }
    _write_json(folder / "preprocessor_config.json",
                {**common, "image_processor_type": "Qwen2VLImageProcessor"})
    _write_json(folder / "video_preprocessor_config.json",
                {**common, "video_processor_type": "Qwen2VLVideoProcessor"})


def _write_pixtral_processor(folder: Path, tokenizer: Any) -> None:
    """FLUX.2's `tokenizer/` (a PixtralProcessor) as on the Hub: the tokenizer's files, the chat
    template, `preprocessor_config.json` and `processor_config.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(_MISTRAL_CHAT_TEMPLATE)
    _write_json(folder / "preprocessor_config.json", {
        "image_processor_type": "PixtralImageProcessor", "processor_class": "PixtralProcessor",
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": _IMAGE_MEAN, "image_std": _IMAGE_STD, "patch_size": 14,
        "resample": 3, "rescale_factor": 1 / 255, "size": {"longest_edge": 1540},
    })
    _write_json(folder / "processor_config.json", {
        "processor_class": "PixtralProcessor", "image_break_token": "[IMG_BREAK]",
        "image_end_token": "[IMG_END]", "image_token": "[IMG]", "patch_size": 14,
        "spatial_merge_size": 2,
    })


# --------------------------------------------------------------------------- public API


def load_pipeline(folder: Path, **kwargs: Any) -> Any:
    """The engine's own loader (`processors.load_pipeline`), for tests that load a family
    directly."""
    return processors.load_pipeline(str(folder), **kwargs)


def build_family(name: str, folder: Path) -> Path:
    """Build the tiny pipeline of family `name` into `folder/name` and return that path; a
    folder that already holds model_index.json is reused as it is."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    target = folder / name
    if (target / "model_index.json").is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            _BUILDERS[name](staging, Path(tmp))
        if target.exists() and not (target / "model_index.json").is_file():
            shutil.rmtree(target, ignore_errors=True)  # a leftover, not a finished build
        try:
            os.replace(staging, target)
        except OSError:  # another process finished the same build first: keep its folder
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# Latent channels of the families whose VAE a TAESD-style decoder can stand in for, with the
# scaling/shift factors of madebyollin's decoders (taesd/taesdxl: 1.0; taesd3; taef1).
_TINY_DECODERS: dict[str, tuple[int, float, float]] = {
    "sd15": (4, 1.0, 0.0), "sd2": (4, 1.0, 0.0), "sdxl": (4, 1.0, 0.0), "lcm": (4, 1.0, 0.0),
    "pixart-sigma": (4, 1.0, 0.0), "sd3": (16, 1.5305, 0.0609), "flux": (16, 0.3611, 0.1159),
    "flux-kontext": (16, 0.3611, 0.1159), "z-image": (16, 0.3611, 0.1159),
}


def build_tiny_decoder_for(name: str, folder: Path) -> Path | None:
    """A random-weight AutoencoderTiny (TAESD layout, 8x) whose latent channels match family
    `name`, saved into `folder/taesd-<name>`; None where no TAESD-style decoder fits (FLUX.2's
    32-channel patchified latents, Qwen-Image's 3-D VAE, Sana's 32x DC-AE)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    spec = _TINY_DECODERS.get(name)
    if spec is None:
        return None
    channels, scaling_factor, shift_factor = spec
    target = folder / f"taesd-{name}"
    if (target / "config.json").is_file():
        return target
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    decoder = AutoencoderTiny(
        in_channels=3, out_channels=3, encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1), latent_channels=channels, upsampling_scaling_factor=2,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
    )
    decoder.save_pretrained(target)
    return target
