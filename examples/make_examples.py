"""Draw the example masks and pictures in code and write the example job specs as JSON."""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent

SEED = 2024
NEGATIVE = "worst quality, bad quality"

# The prompts of every example, twice: for real models, and in the words of the toy world that
# the trained `toy` models know (toy/world.py), written into toy/<name>.json with the same
# masks and settings. Toy prompts have no negative prompt (the toy world has no "bad quality").
PROMPTS = {
    "real": {
        "sky": "clear deep blue sky",
        "mountains": "summer mountains",
        "sun": "the sun",
        "moon": "the moon",
        "waterfall": "a giant waterfall",
        "lake": "a clean deep blue lake",
        "tree": "a large tree",
        "meadow": "a green meadow with flowers",
        "street": "times square",
        "boy": "a brown-haired boy",
        "girl": "a pink-haired girl",
        "alps": "a photo of the Alps",
        "countryside": "a quiet countryside with a small house",
        "balloon": "a red hot-air balloon",
    },
    "toy": {
        "sky": "a blue background",
        "mountains": "brown",
        "sun": "yellow",
        "moon": "white",
        "waterfall": "gray",
        "lake": "purple",
        "tree": "green",
        "meadow": "orange",
        "street": "a gray background",
        "boy": "brown",
        "girl": "pink",
        "alps": "green stripes",
        "countryside": "a green background",
        "balloon": "red",
    },
}
VOCABULARIES = tuple(PROMPTS)
"""`real` examples are written to <name>.json, `toy` ones to toy/<name>.json."""

# Fixed encoder options: the PNG bytes (and so the JSON) must be identical on every run.
PNG_OPTIONS = {"format": "PNG", "optimize": False, "compress_level": 9}

Size = tuple[int, int]  # (width, height), Pillow's order
Point = tuple[int, int]


# --- drawing helpers -------------------------------------------------------------------------


def _paint(size: Size, paint: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    """Run one ImageDraw call on a black canvas and return where it painted, as booleans."""
    img = Image.new("L", size, 0)
    paint(ImageDraw.Draw(img))
    return np.asarray(img) > 127


def polygon(size: Size, points: list[Point]) -> np.ndarray:
    return _paint(size, lambda d: d.polygon(points, fill=255))


def ellipse(size: Size, cx: int, cy: int, rx: int, ry: int) -> np.ndarray:
    return _paint(size, lambda d: d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255))


def disc(size: Size, cx: int, cy: int, r: int) -> np.ndarray:
    return ellipse(size, cx, cy, r, r)


def rect(size: Size, box: tuple[int, int, int, int]) -> np.ndarray:
    return _paint(size, lambda d: d.rectangle(box, fill=255))


def rounded_rect(size: Size, box: tuple[int, int, int, int], radius: int) -> np.ndarray:
    return _paint(size, lambda d: d.rounded_rectangle(box, radius=radius, fill=255))


def png_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, **PNG_OPTIONS)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mask_data_uri(mask: np.ndarray) -> str:
    """A boolean mask as an 8-bit grayscale PNG: 255 inside, 0 outside."""
    # fromarray infers mode "L" from a 2-D uint8 array; passing mode= is deprecated in Pillow.
    return png_data_uri(Image.fromarray(mask.astype(np.uint8) * 255))


def hex_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def vertical_gradient(
    width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> np.ndarray:
    """An (height, width, 3) uint8 array fading from top to bottom; flat rows compress well."""
    t = np.linspace(0.0, 1.0, height)[:, None]
    rows = np.rint(np.array(top) * (1.0 - t) + np.array(bottom) * t).astype(np.uint8)
    return np.repeat(rows[:, None, :], width, axis=1)


# --- spec assembly ---------------------------------------------------------------------------


def prompt(words: str, role: str) -> dict:
    """The prompt (and, for real models, the negative prompt) of `role` in a vocabulary."""
    text = PROMPTS[words][role]
    return {"prompt": text, "negative_prompt": NEGATIVE} if words == "real" else {"prompt": text}


def region(words: str, role: str, mask: np.ndarray, **extra: float) -> dict:
    return {**prompt(words, role), "mask": mask_data_uri(mask), **extra}


def job(
    kind: str,
    width: int,
    height: int,
    background: dict,
    metadata: dict,
    *,
    regions: list[dict] | None = None,
    palette: dict | None = None,
    bootstrap_steps: int | None = 1,
    bootstrap_leak_sensitivity: float | None = None,
    mask_mode: str | None = "discrete",
) -> dict:
    """One job spec, its keys in the contract's order so the JSON reads like the docs."""
    spec: dict = {
        "kind": kind,
        "width": width,
        "height": height,
        "seed": SEED,
        "steps": 5,
        "guidance_scale": 1.0,
        "background": background,
    }
    if regions is not None:
        spec["regions"] = regions
    if palette is not None:
        spec["palette"] = palette
    if bootstrap_steps is not None:
        spec["bootstrap_steps"] = bootstrap_steps
    if bootstrap_leak_sensitivity is not None:
        spec["bootstrap_leak_sensitivity"] = bootstrap_leak_sensitivity
    if mask_mode is not None:
        spec["mask_mode"] = mask_mode
    spec["output"] = {"format": "png"}
    spec["metadata"] = metadata
    return spec


def dump_spec(spec: dict) -> str:
    """The one serialization used for the committed files and for the check."""
    return json.dumps(spec, indent=2, ensure_ascii=True) + "\n"


# --- landscape (768 x 1920, nine regions) ----------------------------------------------------

LANDSCAPE_SIZE: Size = (1920, 768)

# One distinct label color per landscape layer, in paint order; black is the background.
LANDSCAPE_COLORS = [
    (46, 125, 50),  # summer mountains
    (255, 214, 0),  # the sun
    (224, 224, 224),  # the moon
    (79, 195, 247),  # left waterfall
    (2, 136, 209),  # right waterfall
    (26, 35, 126),  # lake
    (141, 110, 99),  # left tree
    (93, 64, 55),  # right tree
    (156, 204, 101),  # meadow
]
PALETTE_BACKGROUND = (0, 0, 0)


def _tree(size: Size, x: int) -> np.ndarray:
    """A trunk standing on the bottom edge under a wide oval crown."""
    trunk = rect(size, (x - 32, 380, x + 32, size[1] - 1))
    crown = ellipse(size, x, 290, 170, 175)
    return trunk | crown


def _waterfall(size: Size, x: int, top: int) -> np.ndarray:
    """A strip from a cliff below the ridge down into the lake, widening as it falls."""
    return polygon(size, [(x - 30, top), (x + 30, top), (x + 55, 610), (x - 55, 610)])


def landscape_layers() -> list[tuple[str, np.ndarray]]:
    """The nine landscape regions (role, mask) in paint order (later ones win in the palette
    version)."""
    size = LANDSCAPE_SIZE
    w, h = size
    # The band reaches below the meadow's top edge, so no sky shows between the two.
    mountains = polygon(
        size,
        [
            (0, 430),
            (140, 330),
            (300, 400),
            (470, 260),
            (640, 370),
            (790, 285),
            (960, 225),
            (1120, 295),
            (1290, 250),
            (1460, 370),
            (1610, 290),
            (1780, 355),
            (w - 1, 315),
            (w - 1, 600),
            (0, 600),
        ],
    )
    lake = ellipse(size, 960, 675, 430, 125)
    trees = (_tree(size, 190), _tree(size, w - 190))
    hills = polygon(
        size,
        [
            (0, 575),
            (240, 550),
            (520, 585),
            (960, 565),
            (1400, 585),
            (1680, 550),
            (w - 1, 575),
            (w - 1, h - 1),
            (0, h - 1),
        ],
    )
    # The meadow surrounds the lake and the tree trunks rather than covering them.
    meadow = hills & ~lake & ~trees[0] & ~trees[1]
    return [
        ("mountains", mountains),
        ("sun", disc(size, 470, 135, 80)),
        ("moon", disc(size, 1460, 115, 58)),
        ("waterfall", _waterfall(size, 755, top=345)),
        ("waterfall", _waterfall(size, 1165, top=310)),
        ("lake", lake),
        ("tree", trees[0]),
        ("tree", trees[1]),
        ("meadow", meadow),
    ]


def landscape(words: str) -> dict:
    w, h = LANDSCAPE_SIZE
    regions = [region(words, role, mask) for role, mask in landscape_layers()]
    background = prompt(words, "sky")
    return job("regions", w, h, background, {"example": "landscape"}, regions=regions)


def landscape_palette(words: str) -> dict:
    w, h = LANDSCAPE_SIZE
    labels = np.zeros((h, w, 3), dtype=np.uint8)
    labels[:] = PALETTE_BACKGROUND
    colors: dict[str, dict] = {}
    for (role, mask), rgb in zip(landscape_layers(), LANDSCAPE_COLORS, strict=True):
        labels[mask] = rgb  # painted in order, so where masks overlap the later region wins
        colors[hex_color(rgb)] = prompt(words, role)
    palette = {"image": png_data_uri(Image.fromarray(labels)), "colors": colors}
    background = prompt(words, "sky")
    return job("regions", w, h, background, {"example": "landscape_palette"}, palette=palette)


# --- street (768 x 768, two people) ----------------------------------------------------------


def _person(size: Size, x: int, head_y: int) -> np.ndarray:
    """A standing silhouette: head, neck and a rounded torso reaching the bottom edge."""
    head = disc(size, x, head_y, 62)
    neck = rect(size, (x - 24, head_y + 40, x + 24, head_y + 90))
    body = rounded_rect(size, (x - 118, head_y + 80, x + 118, size[1] - 1), 60)
    return head | neck | body


def street(words: str) -> dict:
    size: Size = (768, 768)
    background = prompt(words, "street")
    regions = [
        region(words, "boy", _person(size, 250, 190)),
        region(words, "girl", _person(size, 518, 210)),
    ]
    return job("regions", *size, background, {"example": "street"}, regions=regions)


# --- panorama (512 x 3072, one prompt) -------------------------------------------------------


def panorama(words: str) -> dict:
    background = prompt(words, "alps")
    # Bootstrapping and mask quantization only concern regions, so they are left unset here.
    metadata = {"example": "panorama"}
    return job("panorama", 3072, 512, background, metadata, bootstrap_steps=None, mask_mode=None)


# --- inpaint (768 x 768, a balloon over a drawn countryside) ---------------------------------


def countryside_picture(size: Size = (768, 768)) -> Image.Image:
    """A flat-colored countryside: gradient sky, hills, a field, a house and a tree."""
    w, h = size
    horizon = 470
    pixels = np.concatenate(
        [
            vertical_gradient(w, horizon, (70, 130, 210), (195, 222, 245)),
            vertical_gradient(w, h - horizon, (120, 180, 85), (70, 125, 50)),
        ]
    )
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    # Distant hills: upper halves of ovals centred on the horizon, so the field stays flat.
    draw.pieslice((-120, horizon - 90, 420, horizon + 90), 180, 360, fill=(95, 150, 90))
    draw.pieslice((380, horizon - 70, 900, horizon + 70), 180, 360, fill=(85, 140, 85))
    # The house, on the left so the sky above the middle stays free for the balloon.
    draw.rectangle((110, 440, 330, 610), fill=(232, 216, 180))
    draw.polygon([(90, 445), (220, 340), (350, 445)], fill=(170, 62, 50))
    draw.rectangle((196, 520, 244, 610), fill=(110, 70, 40))
    draw.rectangle((135, 470, 180, 510), fill=(170, 210, 235))
    draw.rectangle((272, 470, 317, 510), fill=(170, 210, 235))
    draw.polygon([(196, 611), (244, 611), (300, h - 1), (150, h - 1)], fill=(190, 170, 130))
    # A tree on the right balances the house.
    draw.rectangle((600, 480, 630, 640), fill=(100, 70, 45))
    draw.ellipse((540, 360, 690, 510), fill=(50, 110, 45))
    return img


def _balloon(size: Size) -> np.ndarray:
    """An envelope disc tapering to a throat, with a basket hanging below it."""
    cx = 470
    envelope = disc(size, cx, 190, 105)
    throat = polygon(size, [(cx - 88, 245), (cx + 88, 245), (cx + 26, 340), (cx - 26, 340)])
    ropes = rect(size, (cx - 20, 340, cx + 20, 372))
    basket = rect(size, (cx - 30, 372, cx + 30, 410))
    return envelope | throat | ropes | basket


def inpaint(words: str) -> dict:
    size: Size = (768, 768)
    background = {**prompt(words, "countryside"), "image": png_data_uri(countryside_picture(size))}
    # The reference's recommended inpainting settings: a soft mask edge (std 16 px) to blend
    # with the picture, two bootstrap steps and a lower leak sensitivity.
    regions = [region(words, "balloon", _balloon(size), mask_std=16)]
    return job(
        "regions",
        *size,
        background,
        {"example": "inpaint"},
        regions=regions,
        bootstrap_steps=2,
        bootstrap_leak_sensitivity=0.1,
    )


# --- entry points ----------------------------------------------------------------------------

BUILDERS: dict[str, Callable[[str], dict]] = {
    "landscape": landscape,
    "street": street,
    "panorama": panorama,
    "inpaint": inpaint,
    "landscape_palette": landscape_palette,
}


def build_all() -> dict[str, dict]:
    """Every example spec by name, without writing anything: `<name>` (the file
    `<name>.json`) in the real vocabulary, `toy/<name>` in the toy world's."""
    specs = {}
    for words in VOCABULARIES:
        for name, build in BUILDERS.items():
            key = name if words == "real" else f"{words}/{name}"
            specs[key] = {**build(words), "metadata": {"example": key}}
    return specs


def write_all(out: Path, specs: dict[str, dict] | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in (build_all() if specs is None else specs).items():
        path = out / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Bytes, not text mode, so no platform newline translation changes the file.
        path.write_bytes(dump_spec(spec).encode("ascii"))
        written.append(path)
    return written


def check(out: Path) -> list[str]:
    """Names of the example files in `out` that differ from a fresh build (or are missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_all(Path(tmp))
        names = [p.relative_to(tmp).as_posix() for p in fresh]
        return [
            name
            for name, p in zip(names, fresh, strict=True)
            if not (out / name).is_file() or (out / name).read_bytes() != p.read_bytes()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the JSON files")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files in --out differ from a fresh build",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = check(args.out)
        for name in stale:
            print(f"{args.out / name}: differs from make_examples.py output", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
