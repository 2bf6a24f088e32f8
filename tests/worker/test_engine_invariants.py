"""The engine's invariants (docs/method.md, Tests), on small tensors, no model."""

from __future__ import annotations

import pytest
import torch
from diffusers import LCMScheduler

from worker.render.aggregate import Accumulator
from worker.render.centering import bbox_center_shifts, roll_each
from worker.render.masks import background_masks, blur, cover, prepare_masks, quantize
from worker.render.schedule import build_schedule
from worker.render.tiles import View, axis_spans, tile_views
from worker.render.tiny import SD15_SCHEDULER

SMD_LEVELS = (0.9977, 0.9942, 0.9735, 0.8499, 0.5840)


@pytest.fixture(scope="module")
def lcm():
    return LCMScheduler.from_config(SD15_SCHEDULER)


def coverage(height, width, window, stride):
    views, weights = tile_views(height, width, window, stride)
    total = torch.zeros(1, 1, height, width, dtype=torch.float64)
    for v, w in zip(views, weights):
        v.add_into(total, w.double())
    return views, total[0, 0]


@pytest.mark.parametrize(
    "size,window,stride",
    [
        ((96, 240), (96, 96), (48, 48)),  # 768x1920 at tile 768: 1x4 views
        ((64, 384), (64, 64), (32, 32)),  # 512x3072 panorama: 11 views
        ((100, 250), (32, 32), (16, 16)),  # truncated last tiles on both axes
        ((20, 30), (32, 32), (16, 16)),  # canvas smaller than the window: one view
        ((50, 77), (16, 16), (5, 5)),  # stride below half the window: 3+ tiles overlap
        ((40, 40), (8, 8), (8, 8)),  # no overlap at all
    ],
)
def test_tile_weights_sum_to_one_everywhere(size, window, stride):
    views, total = coverage(*size, window, stride)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert all(0 <= v.top < v.bottom <= size[0] and 0 <= v.left < v.right <= size[1] for v in views)


def test_tile_counts_match_the_reference_formula():
    assert len(tile_views(96, 240, (96, 96), (48, 48))[0]) == 4
    assert len(tile_views(64, 384, (64, 64), (32, 32))[0]) == 11
    # L - window not a multiple of the stride: the last tile is narrower than the window.
    assert axis_spans(100, 32, 16)[-1] == (80, 100)


def test_default_schedule_is_the_doc_table(lcm):
    s = build_schedule(lcm, 5)
    assert s.timesteps == (999, 919, 759, 499, 259)
    assert s.b == pytest.approx(SMD_LEVELS, abs=1e-4)
    assert s.a == pytest.approx((0.0683, 0.1076, 0.2285, 0.5269, 0.8118), abs=1e-4)
    assert max(s.c_skip) < 4e-8 and min(s.c_out) > 0.9999


def test_other_step_counts_use_lcm_spacing(lcm):
    assert build_schedule(lcm, 4).timesteps == (999, 759, 499, 259)
    assert len(build_schedule(lcm, 8)) == 8


def test_denoise_then_renoise_round_trips(lcm):
    s = build_schedule(lcm, 5)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    x = s.renoise(2, x0, eps)
    assert torch.allclose(s.denoise(2, x, eps), x0, atol=1e-4)


@pytest.mark.parametrize("mode", ["discrete", "semi-continuous", "continuous"])
def test_quantized_masks_grow_monotonically_over_steps(mode):
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 1, 64, 64, generator=gen) > 0.7).float()
    blurred = torch.stack([blur(m, 6.0) for m in masks])
    q = quantize(blurred, SMD_LEVELS, mode)
    assert q.shape == (3, 5, 1, 64, 64)
    assert bool((q[:, 1:] >= q[:, :-1] - 1e-6).all())
    assert 0 <= float(q.min()) and float(q.max()) <= 1


@pytest.mark.parametrize("mode", ["discrete", "semi-continuous", "continuous"])
def test_binary_masks_survive_quantization_at_blur_0_and_strength_1(mode):
    m = torch.zeros(2, 1, 64, 96)
    m[0, :, 8:40, 8:50] = 1
    m[1, :, 30:60, 60:90] = 1
    prepared = prepare_masks(
        m,
        strengths=[1, 1],
        stds=[0, 0],
        levels=SMD_LEVELS,
        mode=mode,
        latent_size=(8, 12),
        cover_alpha=1.0,
    )
    expected = torch.nn.functional.interpolate(m, size=(8, 12), mode="nearest-exact")
    for i in range(5):
        assert torch.equal(prepared.steps[:, i], expected)


def test_strength_below_the_first_level_drops_the_region_at_step_0():
    m = torch.ones(1, 1, 16, 16)
    q = quantize(m * 0.98, SMD_LEVELS, "discrete")
    assert q[0, 0].sum() == 0 and q[0, 1].sum() == 0 and q[0, 2].sum() > 0


def test_cover_scales_lower_masks_under_later_ones():
    m = torch.zeros(2, 1, 4, 4)
    m[0] = 1
    m[1, :, :2] = 1
    out = cover(m, 0.3)
    assert torch.allclose(out[0, 0, :2], torch.full((2, 4), 0.3))
    assert torch.equal(out[0, 0, 2:], torch.ones(2, 4)) and torch.equal(out[1], m[1])


def test_blur_keeps_mass_and_background_mask_fills_the_rest():
    m = torch.zeros(1, 64, 64)
    m[:, 24:40, 24:40] = 1
    assert float(blur(m, 3.0).sum()) == pytest.approx(float(m.sum()), rel=1e-4)
    steps = torch.zeros(2, 5, 1, 4, 4)
    steps[0, :, :, :2] = 1
    bg = background_masks(steps)
    assert torch.equal(bg[:, :, :2], torch.zeros(5, 1, 2, 4))
    assert torch.equal(bg[:, :, 2:], torch.ones(5, 1, 2, 4))


def test_centering_moves_the_mask_box_centre_to_the_view_centre_and_unroll_restores():
    masks = torch.zeros(3, 1, 16, 20)
    masks[0, :, 1:5, 2:6] = 1
    masks[1, :, 10:16, 14:20] = 1  # touches the bottom-right corner
    x = torch.randn(3, 4, 16, 20)
    shifts = bbox_center_shifts(masks)
    assert shifts[2] == (0, 0)  # empty mask: no roll
    centred = roll_each(masks, shifts, sign=-1)
    assert bbox_center_shifts(centred)[:2] == [(0, 0), (0, 0)]
    assert torch.equal(roll_each(roll_each(x, shifts, -1), shifts, +1), x)


def test_one_region_of_weight_one_aggregates_to_its_prediction():
    acc = Accumulator((1, 4, 8, 8), torch.device("cpu"))
    x0 = torch.randn(1, 4, 8, 8)
    acc.add(View(0, 8, 0, 8), x0, torch.ones(1, 1, 8, 8))
    assert torch.allclose(acc.result(), x0)


def test_fixed_background_composite_is_weighted_sum_plus_the_rest():
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 8, 8, generator=gen)
    w = torch.rand(2, 1, 8, 8, generator=gen) * 0.5  # D = sum of weights <= 1
    bg = torch.randn(1, 4, 8, 8, generator=gen)
    acc = Accumulator((1, 4, 8, 8), torch.device("cpu"))
    acc.add(View(0, 8, 0, 8), x0, w)
    d = w.sum(0, keepdim=True)
    expected = (w * x0).sum(0, keepdim=True) + (1 - d) * bg
    assert torch.allclose(acc.result(bg), expected, atol=1e-5)


def test_unclaimed_pixels_are_zero_without_background():
    acc = Accumulator((1, 4, 4, 4), torch.device("cpu"))
    w = torch.zeros(1, 1, 4, 4)
    w[..., :2] = 1
    acc.add(View(0, 4, 0, 4), torch.ones(1, 4, 4, 4), w)
    out = acc.result()
    assert torch.equal(out[..., :2], torch.ones(1, 4, 4, 2))
    assert torch.equal(out[..., 2:], torch.zeros(1, 4, 4, 2))


@pytest.mark.parametrize("width,window,stride", [(48, 32, 16), (40, 32, 16), (100, 16, 5)])
def test_wrapped_tiles_cover_the_circle_with_weights_summing_to_one(width, window, stride):
    views, weights = tile_views(8, width, (8, window), (8, stride), wrap=True)
    total = torch.zeros(1, 1, 8, width, dtype=torch.float32)
    for v, w in zip(views, weights):
        v.add_into(total, w)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    assert any(v.wraps for v in views)
    x = torch.arange(8 * width, dtype=torch.float32).view(1, 1, 8, width)
    last = views[-1]
    cols = [c % width for c in range(last.left, last.right)]
    assert torch.equal(last.take(x), x[..., cols])
