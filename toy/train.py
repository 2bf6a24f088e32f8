"""Trains the toy models on the toy world (`toy/world.py`), on the CPU, from a fixed seed.

    python toy/train.py toy      # the sd15 family: VAE, CLIP text encoder, UNet, LCM-LoRA
    python toy/train.py toy-xl   # the sdxl family: two text encoders, UNet (toy's VAE)

Each writes a diffusers directory (and `toy` its LCM-LoRA next to it) into
`worker/render/assets/`, with `SHA256SUMS` (checked whenever the model is loaded) and
`training.json` (the losses, steps, seconds and library versions). The architectures are the
tiny ones of `worker/render/tiny.py`; only their weights are learned here, by plain gradient
descent:

1. the VAE (toy only): reconstruction of 64 px crops plus a small KL term, then its latent
   scaling factor from the data (one over the latents' std, as SD's 0.18215 was found);
2. the text encoder(s) and the UNet together: epsilon prediction on the SD1.5 noise schedule,
   weighted by 1 / alpha_bar (the v objective's weighting), one caption in ten dropped (so an
   empty prompt is the unconditional one); for sdxl the size and crop numbers are drawn at
   random, so the model ignores them on any canvas;
3. the LCM-LoRA (toy only): latent consistency distillation (Luo et al. 2023) of the UNet
   into a LoRA, with the teacher's DDIM step guided at `LCM_GUIDANCE`; the LoRA is saved as
   diffusers saves LoRAs, and fused at load like the real LCM-LoRA.

`--scale 0.02` runs every stage for 2 % of its steps (CI checks that the losses fall).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy import world
from worker.render import tiny
from worker.render.conditioning import Embeds, embed

ASSETS = ROOT / "worker" / "render" / "assets"
SEED = 20261201


@dataclass(frozen=True)
class Plan:
    """Steps, batch sizes and learning rates of one model's stages."""

    vae_steps: int = 3000
    vae_batch: int = 8
    vae_crop: int = 64
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    latents: int = 4096
    unet_steps: int = 2000
    unet_batch: int = 16
    unet_lr: float = 1e-3
    warmup: int = 100
    drop_caption: float = 0.1
    lcm_steps: int = 500
    lcm_batch: int = 8
    lcm_lr: float = 1e-3
    lora_rank: int = 16

    def scaled(self, scale: float) -> Plan:
        def s(n: int, least: int) -> int:
            return max(least, round(n * scale))

        return Plan(
            vae_steps=s(self.vae_steps, 20),
            latents=s(self.latents, 256),
            unet_steps=s(self.unet_steps, 30),
            warmup=s(self.warmup, 5),
            lcm_steps=s(self.lcm_steps, 20),
        )


PLANS = {"toy": Plan(), "toy-xl": Plan(unet_steps=1600)}
"""Each model's full training (toy-xl has no VAE or LCM stage, and fewer UNet steps: one
model of each family fits in 40 minutes on a 2-core CPU)."""
LCM_GUIDANCE = 3.0
"""Guidance of the teacher's step in distillation: the distilled model renders guided at
`guidance_scale` 1 (one UNet pass per view)."""
LCM_DDIM_STEPS = 50
"""The teacher's DDIM grid (LCM's skipping step k = 1000 / 50 = 20)."""
LORA_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "time_emb_proj",
]
"""The UNet layers the LCM-LoRA adapts: those the published LCM-LoRAs adapt."""
XL_SIDES = np.arange(256, 2049, 64)
"""Canvas sides drawn for sdxl's size conditioning."""


def log_losses(losses: list[float], points: int = 20) -> list[float]:
    """The loss curve training.json keeps: the means of `points` equal runs of steps."""
    return [
        float(np.mean(chunk)) for chunk in np.array_split(np.array(losses), points) if len(chunk)
    ]


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_vae(plan: Plan, rng: np.random.Generator):
    """An AutoencoderKL of the tiny architecture; returns it with its losses."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**tiny.tiny_vae_config())
    optimizer = torch.optim.Adam(vae.parameters(), lr=plan.vae_lr)
    losses = []
    for _ in tqdm(range(plan.vae_steps), desc="vae", mininterval=5):
        images, _ = world.sample(int(rng.integers(2**31)), plan.vae_batch)
        top, left = rng.integers(0, world.NATIVE_SIZE - plan.vae_crop + 1, size=2)
        x = images_to_tensor(images[:, top : top + plan.vae_crop, left : left + plan.vae_crop])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.mse_loss(recon, x) + plan.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    vae.eval()
    return vae, losses


@torch.no_grad()
def encode_world(vae, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Posterior means and stds of `count` pictures, and their captions."""
    means, stds, captions = [], [], []
    for start in tqdm(range(0, count, 64), desc="latents", mininterval=5):
        images, words = world.sample(seed + start, min(64, count - start))
        dist = vae.encode(images_to_tensor(images)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        captions += words
    return torch.cat(means), torch.cat(stds), captions


def lr_at(step: int, plan: Plan, total: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < plan.warmup:
        return peak * (step + 1) / plan.warmup
    progress = (step - plan.warmup) / max(1, total - plan.warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class Parts:
    """The pipeline's pieces while they train; `pipe()` assembles the diffusers pipeline."""

    def __init__(self, family: str, vae) -> None:
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTokenizer

        self.family = family
        self.tokenizer = CLIPTokenizer.from_pretrained(tiny.TOKENIZER_DIR, model_max_length=77)
        self.vae = vae
        if family == "sd15":
            self.unet = UNet2DConditionModel(**tiny.tiny_unet_config())
            self.text_encoder = tiny.sd15_text_encoder(self.tokenizer)
            self.text_encoder_2 = None
        else:
            self.unet = UNet2DConditionModel(**tiny.tiny_xl_unet_config())
            self.text_encoder, self.text_encoder_2 = tiny.xl_text_encoders(self.tokenizer)
        self.tokenizer_2 = self.tokenizer
        self.noise = DDPMScheduler(
            **{
                k: v
                for k, v in tiny.SD15_SCHEDULER.items()
                if k not in ("set_alpha_to_one", "steps_offset")
            }
        )

    def trainable(self) -> list[torch.nn.Parameter]:
        modules = [self.unet, self.text_encoder, self.text_encoder_2]
        return [p for m in modules if m is not None for p in m.parameters()]

    def embed(self, prompts: list[str]) -> Embeds:
        return embed(self, prompts)

    def added(self, embeds: Embeds, rng: np.random.Generator) -> dict | None:
        """SDXL's added conditioning: the pooled embedding and random size/crop numbers."""
        if embeds.pooled is None:
            return None
        rows = []
        for _ in range(len(embeds)):
            height, width = rng.choice(XL_SIDES, size=2)
            top = rng.integers(0, height - world.NATIVE_SIZE + 1) // 8 * 8
            left = rng.integers(0, width - world.NATIVE_SIZE + 1) // 8 * 8
            rows.append([height, width, top, left, height, width])
        return {"text_embeds": embeds.pooled, "time_ids": torch.tensor(rows, dtype=torch.float32)}

    def eps(self, unet, x, t, embeds: Embeds, added: dict | None) -> torch.Tensor:
        return unet(x, t, encoder_hidden_states=embeds.hidden, added_cond_kwargs=added).sample

    def pipe(self):
        from diffusers import (
            DDIMScheduler,
            EulerDiscreteScheduler,
            StableDiffusionPipeline,
            StableDiffusionXLPipeline,
        )

        if self.family == "sd15":
            return StableDiffusionPipeline(
                vae=self.vae,
                text_encoder=self.text_encoder,
                tokenizer=self.tokenizer,
                unet=self.unet,
                scheduler=DDIMScheduler(**tiny.SD15_SCHEDULER),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        return StableDiffusionXLPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            text_encoder_2=self.text_encoder_2,
            tokenizer=self.tokenizer,
            tokenizer_2=self.tokenizer_2,
            unet=self.unet,
            scheduler=EulerDiscreteScheduler(**tiny.SDXL_SCHEDULER),
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )


def latent_batch(data, size: int, rng: np.random.Generator, scale: float):
    """A batch of scaled posterior samples and their captions (one in ten dropped)."""
    means, stds, captions = data
    index = torch.from_numpy(rng.integers(0, len(captions), size=size))
    latents = (means[index] + stds[index] * torch.randn_like(means[index])) * scale
    # Mirrored left to right, a scene is still its caption (a triangle's apex stays up).
    flip = torch.from_numpy(rng.random(size) < 0.5)
    latents = torch.where(flip.view(-1, 1, 1, 1), latents.flip(-1), latents)
    return latents, [captions[i] for i in index.tolist()]


def train_unet(parts: Parts, data, plan: Plan, rng: np.random.Generator, scale: float):
    params = parts.trainable()
    optimizer = torch.optim.AdamW(params, lr=plan.unet_lr, weight_decay=1e-2)
    losses = []
    for step in tqdm(range(plan.unet_steps), desc="unet", mininterval=5):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, plan, plan.unet_steps, plan.unet_lr)
        latents, captions = latent_batch(data, plan.unet_batch, rng, scale)
        captions = ["" if rng.random() < plan.drop_caption else c for c in captions]
        noise = torch.randn_like(latents)
        t = torch.from_numpy(rng.integers(0, 1000, size=len(captions)))
        noisy = parts.noise.add_noise(latents, noise, t)
        embeds = parts.embed(captions)
        pred = parts.eps(parts.unet, noisy, t, embeds, parts.added(embeds, rng))
        # Weighted as the v objective weighs an epsilon model (1 / alpha_bar): at high noise
        # an error in epsilon is a large error in the clean picture, and the first of the few
        # steps the model renders with must get a region's color right from almost pure noise.
        weight = 1.0 / parts.noise.alphas_cumprod[t]
        per_sample = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (weight * per_sample).sum() / weight.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def boundary(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LCM's c_skip and c_out at timestep t, as diffusers' LCMScheduler computes them
    (sigma_data 0.5, timestep scaling 10)."""
    scaled = t.float() * 10.0
    c_skip = 0.25 / (scaled**2 + 0.25)
    c_out = scaled / (scaled**2 + 0.25) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def distill_lcm(parts: Parts, data, plan: Plan, rng: np.random.Generator, scale: float):
    """Latent consistency distillation into a LoRA on the (frozen) UNet; returns the losses."""
    from peft import LoraConfig

    alphas = parts.noise.alphas_cumprod
    ratio = 1000 // LCM_DDIM_STEPS
    grid = torch.arange(1, LCM_DDIM_STEPS + 1) * ratio - 1  # 19, 39, ..., 999
    unet = parts.unet
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=plan.lora_rank,
            lora_alpha=plan.lora_rank,
            target_modules=LORA_TARGETS,
            init_lora_weights="gaussian",
        )
    )
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW(params, lr=plan.lcm_lr, weight_decay=1e-2)
    losses = []

    def x0_of(x, eps, t):
        a = alphas[t].view(-1, 1, 1, 1)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()

    def consistency(x, t, embeds):
        c_skip, c_out = boundary(t)
        return c_skip * x + c_out * x0_of(x, parts.eps(unet, x, t, embeds, None), t)

    for step in tqdm(range(plan.lcm_steps), desc="lcm-lora", mininterval=5):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, plan, plan.lcm_steps, plan.lcm_lr)
        latents, captions = latent_batch(data, plan.lcm_batch, rng, scale)
        n = torch.from_numpy(rng.integers(0, LCM_DDIM_STEPS, size=len(captions)))
        t, t_prev = grid[n], (grid[n] - ratio).clamp(min=0)
        x = parts.noise.add_noise(latents, torch.randn_like(latents), t)
        with torch.no_grad():
            cond = parts.embed(captions)
            uncond = parts.embed([""] * len(captions))
            unet.disable_adapters()
            eps_c, eps_u = parts.eps(
                unet, torch.cat([x, x]), torch.cat([t, t]), Embeds.cat([cond, uncond]), None
            ).chunk(2)
            unet.enable_adapters()
            eps = eps_u + LCM_GUIDANCE * (eps_c - eps_u)
            a_prev = alphas[t_prev].view(-1, 1, 1, 1)
            x_prev = a_prev.sqrt() * x0_of(x, eps, t) + (1 - a_prev).sqrt() * eps
            target = consistency(x_prev, t_prev, cond)
        loss = F.mse_loss(consistency(x, t, cond), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def write_checksums(directory: Path) -> None:
    """SHA256SUMS over every weight file under `directory` (`sha256sum -c` reads it)."""
    lines = []
    for path in sorted(directory.rglob("*.safetensors")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(directory).as_posix()}")
    (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=("toy", "toy-xl"))
    parser.add_argument("--out", type=Path, default=ASSETS, help="where the model directories go")
    parser.add_argument(
        "--vae-from",
        type=Path,
        default=ASSETS / "toy" / "vae",
        help="toy-xl: the VAE it shares with toy (train toy first)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="share of every stage's steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    full = PLANS[args.model]
    plan = full if args.scale == 1.0 else full.scaled(args.scale)
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    report: dict = {"model": args.model, "seed": SEED, "plan": plan.__dict__, "losses": {}}
    from diffusers import AutoencoderKL

    if args.model == "toy":
        vae, report["losses"]["vae"] = train_vae(plan, rng)
        family = "sd15"
    else:
        vae = AutoencoderKL.from_pretrained(args.vae_from)
        family = "sdxl"
    data = encode_world(vae, plan.latents, SEED + 1)
    scale = float(1.0 / (data[0] + data[1] * torch.randn_like(data[0])).std())
    vae.register_to_config(scaling_factor=scale)
    if family == "sdxl":
        vae.register_to_config(force_upcast=True)
    report["scaling_factor"] = scale
    torch.manual_seed(SEED + 2)
    parts = Parts(family, vae)
    report["losses"]["unet"] = train_unet(parts, data, plan, rng, scale)
    target = args.out / args.model
    parts.pipe().save_pretrained(target)
    if args.model == "toy":
        from diffusers import StableDiffusionPipeline
        from peft.utils import get_peft_model_state_dict

        report["losses"]["lcm"] = distill_lcm(parts, data, plan, rng, scale)
        lora_dir = args.out / "toy-lcm-lora"
        StableDiffusionPipeline.save_lora_weights(
            lora_dir,
            unet_lora_layers=get_peft_model_state_dict(parts.unet),
            safe_serialization=True,
        )
        write_checksums(lora_dir)
    write_checksums(target)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["versions"] = versions()
    report["losses"] = {k: log_losses(v) for k, v in report["losses"].items()}
    report["threads"] = torch.get_num_threads()
    (target / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.model}: trained in {report['seconds']} s into {target}")


if __name__ == "__main__":
    main()
