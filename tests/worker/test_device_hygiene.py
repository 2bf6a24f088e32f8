"""The GPU path on the CPU: no per-job tensor left on the host, no host sync inside the loop.

A CPU has one device, so a tensor created without `device=` works here and breaks (or crawls)
on a GPU. `TwoDevices` simulates the second device: every tensor is tagged `device` (a model
weight, moved with `.to(device)` / `.to(tensor)`, or computed from a device tensor), `host`
(made without a device, e.g. `torch.zeros(shape)`, or computed from host tensors only) or
`either` (made with an explicit `device=`: the tracer cannot tell which device the code named,
so it takes the place of what it is used with). An op that mixes
the two (a host operand with dimensions) is what raises on CUDA; a read of a device tensor's
value (`.item()`, `.tolist()`, `bool()`, `.cpu()`, `nonzero`, ...) or a host-to-device copy is
a host sync, counted per denoising step through the cancel check and the progress callback.
"""

from __future__ import annotations

import itertools
import traceback
from collections import Counter

import numpy as np
import pytest
import torch
from torch.nn import Module
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from schemas import normalize_spec, parse_spec
from worker.render import load_inputs, load_model, render_job
from worker.render import smd as smd_module
from worker.render.sampler import HOST_SYNCS_BEFORE_LOOP, HOST_SYNCS_PER_STEP

from .test_render_kinds import rect_mask

DEVICE, HOST, EITHER = "device", "host", "either"
FACTORIES = {
    "zeros",
    "ones",
    "empty",
    "full",
    "rand",
    "randn",
    "randint",
    "randperm",
    "arange",
    "linspace",
    "logspace",
    "eye",
    "tensor",
    "as_tensor",
    "scalar_tensor",
    "empty_strided",
}
READS = {
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "numpy",
    "__array__",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "cpu",
}
MOVES = {"to", "cuda", "cpu", "copy_"}


def _place(t) -> str:
    return getattr(t, "_placed", HOST)


class TwoDevices(TorchFunctionMode):
    """Records device mixes and host syncs of everything run under it (see the module doc)."""

    def __init__(self, modules):
        super().__init__()
        for module in modules:
            for t in itertools.chain(module.parameters(), module.buffers()):
                t._placed = DEVICE
        self.mixes: list[str] = []
        self.syncs: list[tuple[str, int, str]] = []  # (phase, step, what)
        self.phase, self.step = "job", 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        on_device = [t for t in tensors if _place(t) == DEVICE]
        on_host = [t for t in tensors if _place(t) == HOST and t.dim() > 0]
        target = self._target(name, args, kwargs, tensors)
        if name in READS and tensors and _place(tensors[0]) != HOST:
            self._sync(f"{name} of a device tensor")
        elif name in MOVES and target == DEVICE and tensors and _place(tensors[0]) == HOST:
            self._sync(f"{name}: host-to-device copy")
        elif name == "tensor" and target == EITHER:
            self._sync("torch.tensor(data, device=...): host-to-device copy")
        elif name in ("__getitem__", "__setitem__") and on_device and _host_index(args[1:2]):
            self._sync(f"{name} of a device tensor with a host index: host-to-device copy")
        elif name == "__getitem__" and _place(args[0]) == HOST and _scalars(on_device):
            self._sync("__getitem__ of a host tensor at a device scalar: reads the scalar")
            target = HOST
        elif on_device and on_host and name not in MOVES:
            self.mixes.append(f"{name}: {_where()}")
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                t._placed = target
        return out

    @staticmethod
    def _target(name, args, kwargs, tensors) -> str:
        """Where the op's result lives."""
        if name == "cpu":
            return HOST
        if name in ("to", "cuda"):
            dest = kwargs.get("device", kwargs.get("other"))
            dest = next(
                (a for a in args[1:] if isinstance(a, str | torch.device | torch.Tensor)), dest
            )
            if isinstance(dest, torch.Tensor):
                return _place(dest)
            if dest == "cpu":  # a library's explicit copy to the host (the engine uses .cpu())
                return HOST
            if dest is not None or name == "cuda":
                return DEVICE
            return _place(args[0])
        if kwargs.get("device") is not None:
            return EITHER
        if name in FACTORIES:
            return HOST
        places = {_place(t) for t in tensors}
        return next((p for p in (DEVICE, HOST, EITHER) if p in places), HOST)

    def _sync(self, what: str) -> None:
        self.syncs.append((self.phase, self.step, f"{what} at {_where()}"))


def _scalars(tensors) -> bool:
    """Device tensors that are all 0-dim (an index the host reads, not an operand)."""
    return bool(tensors) and all(t.dim() == 0 for t in tensors)


def _host_index(index) -> bool:
    if any(isinstance(item, list) for item in index):
        return True
    for item in tree_flatten(list(index))[0]:
        if isinstance(item, torch.Tensor) and (_place(item) == HOST and item.dim() > 0):
            return True
        if isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            return True
    return False


def _where() -> str:
    """The innermost frame of the engine or a library (not torch, not this file)."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "/torch/" not in frame.filename and not frame.filename.endswith(__file__):
            return f"{frame.filename.rsplit('/', 3)[-1]}:{frame.lineno} {frame.line}"
    return "?"


def traced_render(model, spec, inputs, monkeypatch) -> TwoDevices:
    """Render under TwoDevices; phases: `job` (text, masks, decode), `before loop` (the
    sampler's setup), `loop` (step k counted from 0 by the progress callback)."""
    modules = [m for m in model.pipe.components.values() if isinstance(m, Module)]
    mode = TwoDevices(modules)
    sample = smd_module.sample

    def traced_sample(*args, **kwargs):
        mode.phase = "before loop"
        try:
            return sample(*args, **kwargs)
        finally:
            mode.phase = "job"

    def should_cancel() -> bool:
        if mode.phase == "before loop":
            mode.phase = "loop"
        return False

    def on_step(step: int, total: int) -> None:
        mode.step = step

    monkeypatch.setattr(smd_module, "sample", traced_sample)
    with mode:
        render_job(model, spec, inputs, on_step=on_step, should_cancel=should_cancel)
    return mode


W, H = 192, 128
PICTURE = np.random.default_rng(0).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
JOBS = {
    "regions, guided, bootstrapped": {
        "kind": "regions",
        "guidance_scale": 3.0,
        "bootstrap_steps": 2,
        "background": {"prompt": "sky"},
        "regions": [
            {"prompt": "a red house", "mask": rect_mask(W, H, (0, 0, 96, 128))},
            {
                "prompt": "a lake",
                "mask": rect_mask(W, H, (96, 32, 192, 128)),
                "prompt_strength": 0.5,
            },
        ],
    },
    "inpainting": {
        "kind": "regions",
        "background": {"prompt": "a field"},
        "regions": [{"prompt": "a lake", "mask": rect_mask(W, H, (96, 32, 192, 128))}],
    },
    "panorama, wrapped": {
        "kind": "panorama",
        "width": 384,
        "wrap": "horizontal",
        "background": {"prompt": "alps"},
    },
}


@pytest.fixture(scope="module")
def xl(models, model_cache):
    return load_model(models["tiny-random-xl"], device="cpu", cache_dir=model_cache)


def _spec(name: str, job: str, ctx, settings):
    data = {"model": name, "width": W, "height": H, "seed": 5, **JOBS[job]}
    if job == "inpainting":
        from PIL import Image

        from schemas import encode_png_data_uri

        data["background"]["image"] = encode_png_data_uri(Image.fromarray(PICTURE))
    spec, _ = normalize_spec(parse_spec(data, ctx), ctx)
    return spec, load_inputs(spec, max_pixels=settings.max_pixels)


@pytest.mark.parametrize("family", ["tiny-random", "tiny-random-xl"])
@pytest.mark.parametrize("job", list(JOBS))
def test_no_host_tensor_meets_a_device_tensor_and_the_loop_never_syncs(
    family, job, tiny, xl, ctx, settings, monkeypatch
):
    model = tiny if family == "tiny-random" else xl
    spec, inputs = _spec(family, job, ctx, settings)
    mode = traced_render(model, spec, inputs, monkeypatch)
    assert mode.mixes == [], "host tensors used with device tensors:\n" + "\n".join(mode.mixes)
    per_step = Counter(step for phase, step, _ in mode.syncs if phase == "loop")
    loop_syncs = [what for phase, _, what in mode.syncs if phase == "loop"]
    assert all(n <= HOST_SYNCS_PER_STEP for n in per_step.values()), (
        f"host syncs per step {dict(per_step)} over the budget {HOST_SYNCS_PER_STEP}:\n"
        + "\n".join(loop_syncs)
    )
    before = [what for phase, _, what in mode.syncs if phase == "before loop"]
    assert len(before) <= HOST_SYNCS_BEFORE_LOOP, "\n".join(before)
    assert mode.step == spec.steps  # the loop ran to the end under the mode


def test_the_tracer_sees_a_host_tensor_and_a_sync_on_a_device_model():
    """The checks above can fail: a host-made tensor next to a weight, and a read of a value."""
    layer = torch.nn.Linear(4, 4)
    mode = TwoDevices([layer])
    with torch.no_grad(), mode:
        y = layer(torch.zeros(1, 4).to(torch.device("cpu")))  # an upload
        y + torch.ones(1, 4)  # host-made, no device: raises on CUDA
        float(y.sum())
        y + torch.ones(1, 4, device=y.device)  # fine
        torch.arange(4)[(y.sum() * 0).long()]  # a host table at a device index: a read
    assert [m.split(":")[0] for m in mode.mixes] == ["add"]
    syncs = [what.split(" ")[0] for *_, what in mode.syncs]
    assert syncs == ["to:", "__float__", "__getitem__"]
