"""Image inputs: data URIs and assets decode safely, masks read alpha or luminance."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from schemas import (
    MAX_PIXELS,
    SpecError,
    decode_image,
    decode_image_bytes,
    decode_mask,
    encode_png_data_uri,
    image_size,
    mask_array,
    sniff_format,
)

LOC = ["regions", 0, "mask"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def handmade_png(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` grayscale pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


def png_uri_of(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def the_error(exc: pytest.ExceptionInfo[SpecError]) -> dict:
    assert len(exc.value.details) == 1
    return exc.value.details[0]


def test_png_and_webp_data_uris_decode(to_uri):
    png = decode_image(to_uri(Image.new("RGB", (40, 24), "red")), max_pixels=MAX_PIXELS, loc=LOC)
    webp = decode_image(
        to_uri(Image.new("RGBA", (16, 8)), "WEBP", lossless=True), max_pixels=MAX_PIXELS, loc=LOC
    )
    assert png.size == (40, 24) and png.getpixel((0, 0)) == (255, 0, 0)
    assert webp.size == (16, 8)


def test_data_uri_allows_wrapped_base64_and_upper_case_type(to_uri):
    uri = to_uri(Image.new("L", (8, 8)), mime="IMAGE/PNG")
    head, payload = uri.split(",", 1)
    wrapped = head + "," + "\n".join(payload[i : i + 20] for i in range(0, len(payload), 20))
    assert decode_image(wrapped, max_pixels=MAX_PIXELS, loc=LOC).size == (8, 8)


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("BMP", "image/bmp")],
)
def test_other_declared_types_are_refused(to_uri, fmt, mime):
    uri = to_uri(Image.new("RGB", (8, 8)), fmt, mime=mime)
    with pytest.raises(SpecError) as exc:
        decode_image(uri, max_pixels=MAX_PIXELS, loc=LOC)
    assert the_error(exc)["loc"] == LOC
    assert mime in the_error(exc)["msg"]


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("data:image/svg+xml;base64,PHN2Zy8+", "image/svg+xml"),
        ("data:image/png,%89PNG", "base64"),
        ("data:image/png;base64,!!!not-base64!!!", "not valid base64"),
        ("data:image/png;base64,iVBORw0", "not valid base64"),
        ("data:image/png;base64", "malformed data URI"),
        ("https://example.com/mask.png", "URLs are not fetched"),
        ("mask.png", "data URI"),
        ("", "data URI"),
    ],
)
def test_malformed_references_are_refused_at_their_loc(ref, words):
    with pytest.raises(SpecError) as exc:
        decode_image(ref, max_pixels=MAX_PIXELS, loc=LOC)
    assert the_error(exc)["loc"] == LOC
    assert words in the_error(exc)["msg"]


def test_non_string_reference_is_refused():
    with pytest.raises(SpecError):
        decode_image(123, max_pixels=MAX_PIXELS, loc=LOC)  # type: ignore[arg-type]


def test_data_uri_whose_bytes_are_jpeg_but_claims_png_is_refused(to_uri):
    jpeg_as_png = to_uri(Image.new("RGB", (8, 8)), "JPEG", mime="image/png")
    with pytest.raises(SpecError) as exc:
        decode_image(jpeg_as_png, max_pixels=MAX_PIXELS, loc=LOC)
    assert the_error(exc) == {
        "loc": LOC,
        "msg": "the data URI says image/png but its bytes are JPEG",
    }


def test_data_uri_whose_bytes_are_webp_but_claims_png_is_refused(to_uri):
    webp_as_png = to_uri(Image.new("RGB", (8, 8)), "WEBP", mime="image/png")
    with pytest.raises(SpecError, match="says image/png but its bytes are WebP"):
        decode_image(webp_as_png, max_pixels=MAX_PIXELS, loc=LOC)


def test_png_claiming_100000_by_100000_is_refused_before_decoding():
    uri = png_uri_of(handmade_png(100_000, 100_000))
    start = time.perf_counter()
    with pytest.raises(SpecError) as exc:
        decode_image(uri, max_pixels=MAX_PIXELS, loc=LOC)
    assert time.perf_counter() - start < 1.0
    msg = the_error(exc)["msg"]
    assert "100000x100000" in msg and str(MAX_PIXELS) in msg
    assert the_error(exc)["loc"] == LOC


def test_pillows_own_bomb_error_becomes_a_spec_error():
    # The farm's cap is above Pillow's hard limit: Pillow's DecompressionBombError must still
    # come back as a SpecError, never escape.
    uri = png_uri_of(handmade_png(100_000, 100_000))
    with pytest.raises(SpecError, match="over the limit"):
        decode_image(uri, max_pixels=10**11, loc=LOC)


def test_pillows_bomb_warning_becomes_a_spec_error():
    # 10000 x 10000 is under this cap but over Pillow's warning limit (89M pixels).
    uri = png_uri_of(handmade_png(10_000, 10_000))
    with pytest.raises(SpecError, match="over the limit"):
        decode_image(uri, max_pixels=2 * 10**8, loc=LOC)


def test_image_over_max_pixels_is_refused_with_both_numbers(to_uri):
    uri = to_uri(Image.new("L", (100, 60)))
    with pytest.raises(SpecError) as exc:
        decode_image(uri, max_pixels=5000, loc=LOC)
    assert the_error(exc)["msg"] == "image is 100x60 (6000 pixels), over the limit of 5000 pixels"


def test_webp_over_max_pixels_is_refused(to_uri):
    uri = to_uri(Image.new("L", (100, 60)), "WEBP", lossless=True)
    with pytest.raises(SpecError, match="100x60"):
        decode_image(uri, max_pixels=5000, loc=LOC)


def test_truncated_png_is_a_spec_error(to_uri):
    arr = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    with pytest.raises(SpecError) as exc:
        decode_image(png_uri_of(buf.getvalue()[:300]), max_pixels=MAX_PIXELS, loc=LOC)
    assert the_error(exc)["loc"] == LOC
    assert "truncated or corrupt" in the_error(exc)["msg"]


def test_png_with_corrupt_header_is_a_spec_error():
    data = bytearray(handmade_png(8, 8))
    data[20] ^= 0xFF  # breaks the IHDR checksum
    with pytest.raises(SpecError) as exc:
        decode_image(png_uri_of(bytes(data)), max_pixels=MAX_PIXELS, loc=LOC)
    assert the_error(exc)["loc"] == LOC


def test_asset_reference_without_a_reader_needs_the_api():
    with pytest.raises(SpecError) as exc:
        decode_image("asset:abc", max_pixels=MAX_PIXELS, loc=LOC)
    assert the_error(exc)["loc"] == LOC
    assert "need the API" in the_error(exc)["msg"]


def test_asset_reference_is_read_through_the_reader(to_uri):
    png = base64.b64decode(to_uri(Image.new("L", (12, 10))).split(",", 1)[1])
    seen = []

    def read(asset_id: str) -> bytes:
        seen.append(asset_id)
        return png

    assert decode_image("asset:abc123", max_pixels=MAX_PIXELS, loc=LOC, assets=read).size == (
        12,
        10,
    )
    assert seen == ["abc123"]


def test_unknown_asset_and_non_image_asset_are_spec_errors():
    def missing(asset_id: str) -> bytes:
        raise KeyError(asset_id)

    with pytest.raises(SpecError, match="unknown asset 'asset:nope'"):
        decode_image("asset:nope", max_pixels=MAX_PIXELS, loc=LOC, assets=missing)
    with pytest.raises(SpecError, match="not a PNG, WebP or JPEG"):
        decode_image("asset:x", max_pixels=MAX_PIXELS, loc=LOC, assets=lambda _: b"<svg/>")
    with pytest.raises(SpecError, match="empty asset reference"):
        decode_image("asset:", max_pixels=MAX_PIXELS, loc=LOC, assets=lambda _: b"")


def test_spec_error_from_the_reader_is_moved_to_the_loc():
    def read(asset_id: str) -> bytes:
        raise SpecError("asset expired", loc=["somewhere"])

    with pytest.raises(SpecError) as exc:
        decode_image("asset:x", max_pixels=MAX_PIXELS, loc=LOC, assets=read)
    assert the_error(exc) == {"loc": LOC, "msg": "asset expired"}


def test_decode_image_bytes_checks_format_and_size(to_uri):
    png = base64.b64decode(to_uri(Image.new("L", (10, 10))).split(",", 1)[1])
    assert decode_image_bytes(png, max_pixels=100, loc=[]).size == (10, 10)
    with pytest.raises(SpecError, match="over the limit"):
        decode_image_bytes(png, max_pixels=99, loc=[])
    with pytest.raises(SpecError, match="not an accepted image"):
        decode_image_bytes(b"GIF89a....", max_pixels=100, loc=[])


def test_image_size_reads_the_header_only():
    assert image_size(png_uri_of(handmade_png(640, 480)), max_pixels=MAX_PIXELS, loc=[]) == (
        640,
        480,
    )


def test_sniff_format_names_formats_by_magic_number():
    assert sniff_format(handmade_png(1, 1)) == "PNG"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert sniff_format(b"<svg") is None


# --- masks -----------------------------------------------------------------------------


def test_mask_without_alpha_uses_luminance():
    arr = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert mask_array(Image.fromarray(arr)).tolist() == [[False, False, True, True]]


def test_rgb_mask_uses_luminance():
    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (255, 255, 255))
    img.putpixel((1, 0), (0, 0, 255))  # blue is dark: luminance 29
    assert mask_array(img).tolist() == [[True, False]]


def test_mask_with_alpha_uses_alpha_not_luminance():
    img = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 0, 255))  # black but opaque: inside
    img.putpixel((1, 0), (255, 255, 255, 0))  # white but transparent: outside
    img.putpixel((2, 0), (255, 255, 255, 200))
    assert mask_array(img).tolist() == [[True, False, True]]


def test_la_and_palette_transparency_masks_use_alpha(to_uri):
    la = Image.new("LA", (2, 1), (255, 0))
    la.putpixel((1, 0), (0, 255))
    assert mask_array(la).tolist() == [[False, True]]
    p = Image.new("P", (2, 1), 0)
    p.putpalette([255, 255, 255, 0, 0, 0])
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0  # white entry is transparent
    decoded = decode_image(to_uri(p, transparency=0), max_pixels=MAX_PIXELS, loc=LOC)
    assert mask_array(decoded).tolist() == [[False, True]]


def test_sixteen_bit_grayscale_mask_is_scaled_not_clipped(to_uri):
    arr = np.array([[300, 30000, 40000]], dtype=np.uint16)
    img = decode_image(to_uri(Image.fromarray(arr)), max_pixels=MAX_PIXELS, loc=LOC)
    assert mask_array(img).tolist() == [[False, False, True]]


def test_decode_mask_returns_a_bool_canvas_sized_array(box_mask):
    mask = decode_mask(
        box_mask(128, 64, (0, 0, 10, 5)), width=128, height=64, max_pixels=10**6, loc=LOC
    )
    assert mask.dtype == np.bool_ and mask.shape == (64, 128)
    assert int(mask.sum()) == 50


def test_mask_of_the_wrong_size_is_refused(box_mask):
    with pytest.raises(SpecError) as exc:
        decode_mask(box_mask(64, 48), width=128, height=64, max_pixels=10**6, loc=LOC)
    assert the_error(exc) == {"loc": LOC, "msg": "mask is 64x48 but the canvas is 128x64"}


def test_all_zero_mask_is_refused(to_uri):
    with pytest.raises(SpecError) as exc:
        decode_mask(
            to_uri(Image.new("L", (128, 64), 0)), width=128, height=64, max_pixels=10**6, loc=LOC
        )
    assert the_error(exc) == {"loc": LOC, "msg": "mask is empty: no pixel is above 0.5"}


def test_fully_transparent_white_mask_is_empty(to_uri):
    with pytest.raises(SpecError, match="mask is empty"):
        decode_mask(
            to_uri(Image.new("RGBA", (8, 8), (255, 255, 255, 0))),
            width=8,
            height=8,
            max_pixels=10**6,
            loc=LOC,
        )


def test_encode_png_data_uri_round_trips_and_is_deterministic():
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:10, 3:7] = True
    uri = encode_png_data_uri(mask)
    assert uri.startswith("data:image/png;base64,")
    assert encode_png_data_uri(mask.copy()) == uri
    img = decode_image(uri, max_pixels=MAX_PIXELS, loc=[])
    assert img.mode == "L" and img.size == (30, 20)
    assert np.array_equal(mask_array(img), mask)


def test_encode_png_data_uri_takes_rgb_arrays_and_images():
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    assert decode_image(encode_png_data_uri(rgb), max_pixels=100, loc=[]).mode == "RGB"
    assert encode_png_data_uri(Image.fromarray(rgb)) == encode_png_data_uri(rgb)
    with pytest.raises(TypeError):
        encode_png_data_uri(np.zeros((4, 4), dtype=np.float32))
