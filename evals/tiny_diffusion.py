"""A random-weight Stable Diffusion pipeline saved to a folder: no hub, no downloaded weights.

For tests, benchmarks and demos of the diffusers path (`[generator] kind = "diffusers"`,
`model = <folder>`). Built from configs as diffusers' own tests do, then `save_pretrained`.

    python -m evals.tiny_diffusion FOLDER [--shape tiny|sd-turbo]

`tiny` renders a 32-128 px image in milliseconds on a CPU; `sd-turbo` has SD-Turbo's
component shapes (UNet 320-1280 channels, a 1024-wide 23-layer text encoder, the full VAE):
its speed and memory are SD-Turbo's, its pictures noise.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

SHAPES = ("tiny", "sd-turbo")


def write_tokenizer_files(folder: Path) -> None:
    """A tiny CLIP BPE vocabulary: letters, punctuation and all two-letter word endings."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for s in list(string.ascii_lowercase) + list(",.-'"):
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    merges = ["#version: 0.2"]
    for a in string.ascii_lowercase:
        for b in string.ascii_lowercase:
            merges.append(f"{a} {b}</w>")
            vocab[f"{a}{b}</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")


def _components(shape: str) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if shape == "tiny":
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, norm_num_groups=32)
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
        text = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                              num_attention_heads=4, num_hidden_layers=2, vocab_size=1000, max_position_embeddings=77)
    else:  # SD-Turbo (SD 2.1): its published component configs
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
        text = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=1024, intermediate_size=4096,
                              num_attention_heads=16, num_hidden_layers=23, vocab_size=1000, max_position_embeddings=77,
                              hidden_act="gelu", projection_dim=512)
    return {"unet": unet, "vae": vae, "text_encoder": CLIPTextModel(text)}


def save_tiny_pipeline(folder: str | Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Build a random-weight Stable Diffusion pipeline of `shape` and save it to `folder`."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    folder = Path(folder)
    torch.manual_seed(seed)
    components = _components(shape)
    write_tokenizer_files(folder / "tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer-src"), model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionPipeline(**components, tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder / "pipeline"))
    return folder / "pipeline"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(save_tiny_pipeline(args.folder, args.shape, args.seed))


if __name__ == "__main__":
    main()
