"""The MultiDiffusion baseline (method `multidiffusion`) against diffusers' panorama pipeline."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.specifiers import SpecifierSet

from schemas import encode_png_data_uri, normalize_spec, parse_spec
from worker.render import RenderCanceled, load_inputs, render_job
from worker.render.baseline import baseline_views, baseline_window

PROMPT, NEGATIVE = "a photo of the dolomites", "blurry"
STEPS = 5  # DDIM steps per render here: a few, to stay fast on a CPU (the default is 50)


@pytest.fixture(scope="module")
def panorama_pipe(tiny):
    """diffusers' StableDiffusionPanoramaPipeline on the very modules of the loaded tiny-random
    (its LCM-LoRA is fused into the shared UNet), with a DDIM scheduler of the same config."""
    from worker.render.baseline import diffusers_panorama_pipeline

    return diffusers_panorama_pipeline(tiny)


def panorama_spec(width: int, height: int, **extra) -> dict:
    return {
        "kind": "panorama",
        "method": "multidiffusion",
        "width": width,
        "height": height,
        "seed": 7,
        "steps": STEPS,
        "guidance_scale": 7.5,
        "background": {"prompt": PROMPT, "negative_prompt": NEGATIVE},
        **extra,
    }


def rect_mask(width: int, height: int, box: tuple[int, int, int, int]) -> str:
    m = np.zeros((height, width), dtype=bool)
    left, top, right, bottom = box
    m[top:bottom, left:right] = True
    return encode_png_data_uri(m)


def two_regions(width: int, height: int, **extra) -> dict:
    return {
        "kind": "regions",
        "method": "multidiffusion",
        "width": width,
        "height": height,
        "seed": 11,
        "steps": 4,
        "regions": [
            {"prompt": "a red house", "mask": rect_mask(width, height, (0, 0, width // 2, height))},
            {
                "prompt": "a blue lake",
                "mask": rect_mask(width, height, (width // 2, 64, width, height)),
            },
        ],
        **extra,
    }


def covered(views, h: int, w: int) -> torch.Tensor:
    count = torch.zeros(1, 1, h, w)
    for view in views:
        view.add_into(count, torch.ones_like(view.take(count)))
    return count


# --- views ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "wrap"),
    [(512, 1024, False), (640, 576, False), (256, 256, False), (256, 640, True), (256, 256, True)],
)
def test_views_are_diffusers_get_views(panorama_pipe, height, width, wrap):
    """Same windows in the same order (latent units), where the stride fits the canvas."""
    h, w = height // 8, width // 8
    ours = baseline_views(h, w, 64, 8, wrap=wrap)
    theirs = panorama_pipe.get_views(height, width, circular_padding=wrap)
    assert len(ours) == len(theirs)
    for view, (top, bottom, left, right) in zip(ours, theirs, strict=True):
        # diffusers' ends may pass a canvas shorter than the window; its slices stop at it.
        assert (view.top, view.bottom, view.left) == (top, min(bottom, h), left)
        if not wrap or right <= w:
            assert view.columns is None and view.right == min(right, w)
        else:  # wraps past the right edge, as diffusers' circular padding
            expected = list(range(left, w)) + list(range(min(right - w, w)))
            assert view.columns.tolist() == expected


@pytest.mark.parametrize(("h", "w", "wrap"), [(72, 125, False), (67, 70, False), (32, 21, True)])
def test_views_cover_canvases_the_stride_does_not_fit(h, w, wrap):
    """diffusers leaves up to stride - 1 edge columns without a view (zero latents there); the
    baseline adds one view flush with the edge, after diffusers' own."""
    views = baseline_views(h, w, 16, 8, wrap=wrap)
    assert bool((covered(views, h, w) > 0).all())
    last = views[-1]
    assert (last.bottom, last.right) == (h, w)


def test_the_window_defaults_to_the_originals_and_the_tile_overrides_it(ctx):
    spec = parse_spec(panorama_spec(512, 256), ctx)
    assert baseline_window(spec) == (64, 8)
    assert baseline_window(parse_spec(panorama_spec(512, 256, tile={"size": 256}), ctx)) == (32, 8)
    tile = {"size": 256, "stride": 128}
    assert baseline_window(parse_spec(panorama_spec(512, 256, tile=tile), ctx)) == (32, 16)


# --- panorama: diffusers' StableDiffusionPanoramaPipeline, reproduced -----------------------


@pytest.mark.parametrize(
    ("height", "width", "wrap"),
    [
        (256, 768, "none"),  # 1 x 5 views
        (576, 576, "none"),  # 2 x 2 views of 64 x 64 latent
        (256, 256, "none"),  # smaller than the window on both axes: one view
        (256, 640, "horizontal"),  # 10 views, those near the right edge wrap around
    ],
)
def test_panorama_matches_diffusers_panorama_pipeline(
    tiny, panorama_pipe, render, height, width, wrap
):
    reference = panorama_pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        height=height,
        width=width,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="np",
        circular_padding=wrap == "horizontal",
    ).images[0]
    result, _ = render(panorama_spec(width, height, wrap=wrap))
    ours = np.asarray(result.image, dtype=np.float64) / 255.0
    assert ours.shape == reference.shape == (height, width, 3)
    # Measured: the same floats bit for bit without wrap, so only our 8-bit rounding shows
    # (0.5/255); with wrap within 1e-6 before rounding (diffusers scales the padded latent by
    # 1 / scaling_factor instead of dividing), which can flip one rounding: 1/255 at most.
    assert np.abs(ours - reference).max() <= 2 / 255
    views = baseline_views(height // 8, width // 8, 64, 8, wrap=wrap == "horizontal")
    assert result.unet_calls == STEPS * len(views)  # one call per view and step...
    assert result.unet_samples == 2 * result.unet_calls  # ...with uncond and cond together
    assert type(tiny.pipe.scheduler).__name__ == "LCMScheduler"  # the shared one is untouched


def test_wrap_meets_its_left_edge_without_a_seam(render):
    """The wrapped panorama's right edge continues into its left one like any two neighbouring
    columns do; without wrap the same pair of edge columns is an outlier."""

    def seam_rank(wrap: str) -> float:
        result, _ = render(panorama_spec(640, 256, steps=4, wrap=wrap))
        image = np.asarray(result.image, dtype=np.float64)
        neighbours = np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))
        seam = np.abs(image[:, 0] - image[:, -1]).mean()
        return float((neighbours < seam).mean())  # the share of neighbour pairs below the seam

    assert seam_rank("horizontal") < 0.95
    assert seam_rank("none") > 0.95


# --- regions ---------------------------------------------------------------------------------


def test_regions_render_with_bootstrapping_and_count_unet_calls(render):
    steps_seen, latents_seen = [], []
    data = two_regions(
        384, 256, background={"prompt": "clear sky"}, tile={"size": 256, "stride": 64}
    )
    result, spec = render(
        data,
        on_step=lambda i, total: steps_seen.append((i, total)),
        on_latent=lambda i, latent: latents_seen.append((i, tuple(latent.shape))),
    )
    assert result.image.size == (384, 256) and spec.bootstrap_steps == 2  # 40% of 4 steps
    # A 32 x 48 latent at window 32 / stride 8: 1 x 3 views. One UNet call per view and step
    # carries every prompt (2 regions + the background prompt), uncond and cond: 2 x 3 latents.
    views = 3
    assert result.unet_calls == 4 * views
    assert result.unet_samples == 4 * views * (2 + 1) * 2
    assert steps_seen == [(i, 4) for i in range(1, 5)]
    assert latents_seen == [(i, (1, 4, 32, 48)) for i in range(1, 5)]
    assert np.asarray(result.image).std() > 1  # a picture, not a flat colour
    again, _ = render(data)
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))  # seeded


def test_regions_without_a_background_keep_plain_white_outside_the_masks(render):
    result, _ = render(two_regions(256, 192, bootstrap_steps=1))
    image = np.asarray(result.image)
    # The blue lake starts at row 64 on the right half: above it no region claims a pixel.
    assert (image[:64, 128:] == 255).all()
    assert (image[:, :128] != 255).any()
    # One view (the canvas is under the 512 px window); the white background is not denoised.
    assert result.unet_calls == 4 and result.unet_samples == 4 * 2 * 2


def test_regions_over_a_background_picture_leave_it_untouched_outside_the_masks(render):
    picture = np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    data = two_regions(256, 192, steps=2, background={"image": encode_png_data_uri(picture)})
    result, _ = render(data)
    image = np.asarray(result.image)
    assert np.array_equal(image[:64, 128:], picture[:64, 128:])
    assert not np.array_equal(image[:, :128], picture[:, :128])
    assert result.unet_calls == 2 and result.unet_samples == 2 * 2 * 2  # the picture: no prompt


def test_smd_only_controls_are_named_in_the_warnings(render):
    data = two_regions(128, 128, steps=1, bootstrap_steps=0, background={"prompt": "sky"})
    data["regions"][0]["mask_std"] = 4.0
    result, _ = render(data)
    assert result.warnings == [
        "method 'multidiffusion' ignores regions[].mask_std (StreamMultiDiffusion controls)"
    ]


def test_kind_image_is_one_prompt_like_a_panorama(render):
    data = {"kind": "image", "method": "multidiffusion", "seed": 2, "steps": 2}
    result, spec = render(data | {"background": {"prompt": "a cat"}})
    assert (spec.width, spec.height) == (256, 256)  # tiny-random's native size
    assert result.image.size == (256, 256) and result.unet_calls == 2  # under the window: 1 view


def test_a_cancel_stops_the_baseline_between_views(render):
    asked = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(RenderCanceled):
        render(panorama_spec(768, 256), should_cancel=cancel)
    assert len(asked) == 3


# --- defaults and the pin --------------------------------------------------------------------


def test_normalize_fills_the_baselines_defaults(ctx, tiny, settings):
    data = {
        "kind": "regions",
        "model": "tiny-random",
        "method": "multidiffusion",
        "width": 64,
        "height": 64,
        "background": {"prompt": "sky"},
    }
    spec, _ = normalize_spec(parse_spec(data, ctx), ctx)
    assert (spec.steps, spec.guidance_scale, spec.bootstrap_steps) == (50, 7.5, 10)
    assert baseline_window(spec) == (64, 8)  # tile left null: the original's window
    # And render_job sends it to the baseline: one step here, for speed.
    one_step = spec.model_copy(update={"steps": 1, "bootstrap_steps": 0})
    result = render_job(tiny, one_step, load_inputs(one_step, max_pixels=settings.max_pixels))
    assert result.unet_calls == 1 and result.unet_samples == 2  # guidance 7.5: a guided pair


def test_diffusers_is_inside_the_range_pyproject_pins():
    """StableDiffusionPanoramaPipeline is deprecated upstream; the equivalence above holds
    for the range pinned in pyproject.toml's `worker` extra."""
    import diffusers

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    worker = pyproject["project"]["optional-dependencies"]["worker"]
    [pin] = [r for r in worker if r.startswith("diffusers")]
    assert SpecifierSet(pin.removeprefix("diffusers")).contains(diffusers.__version__)
