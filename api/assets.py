"""The assets resource: upload an image once, use it as ``asset:<id>`` in many specs."""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, jsonify, request

from api.auth import tenant
from api.errors import ApiError
from api.state import state
from farm.redis_keys import asset_meta_key
from farm.storage import asset_key
from schemas import SpecError, decode_image_bytes, sniff_format
from schemas.defaults import ASSET_TTL
from schemas.formats import CONTENT_TYPES, OUTPUT_FORMATS, PILLOW_NAMES
from schemas.identifiers import asset_id
from schemas.images import ASSET_FORMATS

__all__ = ["bp"]

bp = Blueprint("assets", __name__, url_prefix="/v1/assets")

RAW_TYPES = {CONTENT_TYPES[name]: PILLOW_NAMES[name] for name in OUTPUT_FORMATS}
"""Content types of a raw upload, with Pillow's name of each format."""
FORMAT_NAMES = {PILLOW_NAMES[name]: name for name in OUTPUT_FORMATS}
"""Our name of each Pillow format: an asset's extension and its content type's key."""


def _upload_bytes() -> tuple[bytes, list[str | int]]:
    """The image bytes from a raw body or a multipart field `file`, and their JSON path."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(
                422,
                "invalid_asset",
                "send the image in the multipart field 'file'",
                [{"loc": ["file"], "msg": "field required"}],
            )
        return upload.read(), ["file"]
    if request.mimetype not in RAW_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the image as the raw body with Content-Type {' or '.join(RAW_TYPES)}, "
            f"or as multipart field 'file' (got {request.mimetype or 'none'})",
        )
    return request.get_data(), ["body"]


@bp.post("")
def upload() -> Response:
    st = state()
    who = tenant()
    data, loc = _upload_bytes()
    fmt = sniff_format(data)
    if fmt not in ASSET_FORMATS:
        raise ApiError(
            422,
            "invalid_asset",
            "the upload is not a PNG, WebP or JPEG image",
            [{"loc": loc, "msg": f"not a PNG, WebP or JPEG image (found {fmt or 'unknown'})"}],
        )
    # Decoding checks the header's size against max_pixels first (decompression bombs).
    try:
        image = decode_image_bytes(data, max_pixels=st.settings.max_pixels, loc=loc)
    except SpecError as exc:
        raise ApiError(422, "invalid_asset", exc.details[0]["msg"], exc.details) from None
    sha = hashlib.sha256(data).hexdigest()
    ext = FORMAT_NAMES[fmt]
    st.storage.put_bytes(asset_key(st.storage.prefix, who, sha, ext), data, CONTENT_TYPES[ext])
    meta = {
        "ext": ext,
        "format": fmt,
        "width": image.width,
        "height": image.height,
        "bytes": len(data),
    }
    pipe = st.redis.pipeline()
    pipe.hset(asset_meta_key(who, sha), mapping=meta)
    pipe.expire(asset_meta_key(who, sha), ASSET_TTL)
    pipe.execute()
    body = {
        "id": asset_id(sha),
        "width": image.width,
        "height": image.height,
        "sha256": sha,
        "format": ext,
        "bytes": len(data),
    }
    response = jsonify(body)
    response.status_code = 201
    return response
