"""SpecError's shape, the pydantic-error converter, and the shared names and limits."""

from __future__ import annotations

import pickle
from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

import schemas
from schemas import SpecError, defaults, details_from_validation_error, names, queue_for_model


def test_spec_error_lines_name_the_path():
    err = SpecError(
        [
            {"loc": ["regions", 2, "mask"], "msg": "mask is 640x480 but the canvas is 1920x768"},
            {"loc": [], "msg": "the job spec must be a JSON object"},
        ]
    )
    assert str(err) == (
        "regions.2.mask: mask is 640x480 but the canvas is 1920x768\n"
        "the job spec must be a JSON object"
    )
    assert isinstance(err, ValueError)


def test_spec_error_from_a_message_and_loc():
    err = SpecError("is too large", loc=("metadata",))
    assert err.details == [{"loc": ["metadata"], "msg": "is too large"}]
    assert str(err) == "metadata: is too large"


def test_spec_error_survives_pickling():
    err = SpecError("bad", loc=["regions", 0, "mask"])
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, SpecError) and again.details == err.details


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be positive")
    return value


class Leaf(BaseModel):
    n: Annotated[int, AfterValidator(_positive)]


class Other(BaseModel):
    s: str


class Tree(BaseModel):
    either: Leaf | Other
    mixed: list[Annotated[int, AfterValidator(_positive)] | str]
    by_key: dict[Annotated[str, AfterValidator(str.upper)], int]


def test_converter_strips_union_tags_model_names_and_key_markers():
    with pytest.raises(ValidationError) as exc:
        Tree.model_validate({"either": {"n": -1}, "mixed": [1, -2], "by_key": {"a": "x"}})
    raw_locs = [e["loc"] for e in exc.value.errors()]
    assert any("Leaf" in loc for loc in raw_locs)  # pydantic's own locs carry the tags
    details = details_from_validation_error(exc.value)
    for detail in details:
        for part in detail["loc"]:
            assert isinstance(part, int) or (part.islower() and "[" not in part), detail
    assert {"loc": ["either", "n"], "msg": "must be positive"} in details
    assert {"loc": ["mixed", 1], "msg": "must be positive"} in details
    assert {"loc": ["by_key", "a"], "msg": "must be an integer"} in details


def test_converter_keeps_the_clients_unknown_key_verbatim():
    class Strict(BaseModel, extra="forbid"):
        a: int = 0

    with pytest.raises(ValidationError) as exc:
        Strict.model_validate({"Region": 1, "int": 2})
    details = details_from_validation_error(exc.value)
    assert [d["loc"] for d in details] == [["Region"], ["int"]]
    assert all("unknown field" in d["msg"] for d in details)


def test_task_and_queue_names():
    assert schemas.TASK_RENDER == names.TASK_RENDER == defaults.TASK_RENDER == "regionfarm.render"
    assert queue_for_model("sd15-lcm") == "render.sd15-lcm"
    assert defaults.queue_for_model is queue_for_model


def test_limits_have_the_contract_values():
    assert defaults.MAX_PIXELS == 8192 * 1024 == 8_388_608
    assert defaults.MAX_REQUEST_BYTES == 32 * 1024 * 1024
    assert defaults.MAX_REGIONS == 64 and defaults.MAX_PROMPT_CHARS == 2000
    assert defaults.MAX_METADATA_BYTES == 4096 and defaults.SEED_MAX == 2**63 - 1
    assert defaults.MAX_MASK_STD == 64
    assert (defaults.LCM_MAX_STEPS, defaults.MULTIDIFFUSION_MAX_STEPS) == (50, 150)
    assert defaults.DEFAULT_PRIORITY == 5 and defaults.DEFAULT_MODEL == "sd15-lcm"


def test_public_names_are_exported():
    for name in schemas.__all__:
        assert hasattr(schemas, name), name


def test_converter_messages_read_as_must():
    class Limits(BaseModel):
        name: str
        count: int = 0

    with pytest.raises(ValidationError) as exc:
        Limits.model_validate({"count": "many"})
    assert details_from_validation_error(exc.value) == [
        {"loc": ["name"], "msg": "field required"},
        {"loc": ["count"], "msg": "must be an integer"},
    ]


def test_converter_with_the_input_keeps_client_keys_that_look_like_tags():
    class Entry(BaseModel, extra="forbid"):
        prompt: str

    class Colors(BaseModel):
        colors: dict[Annotated[str, AfterValidator(_positive_key)], Entry] | None

    data = {"colors": {"Red": {"prompt": 1}, "str": {"prompt": "x"}}}
    with pytest.raises(ValidationError) as exc:
        Colors.model_validate(data)
    locs = [d["loc"] for d in details_from_validation_error(exc.value, data)]
    assert locs == [["colors", "Red"], ["colors", "Red", "prompt"], ["colors", "str"]]


def _positive_key(key: str) -> str:
    if not key.startswith("#"):
        raise ValueError("not a color")
    return key


def test_client_color_key_in_camel_case_is_named_in_the_spec_error(ctx):
    from schemas import parse_spec

    spec = {"width": 64, "height": 64, "palette": {"image": "x", "colors": {"Red": {"prompt": 1}}}}
    with pytest.raises(SpecError) as exc:
        parse_spec(spec, ctx)
    assert [d["loc"] for d in exc.value.details] == [
        ["palette", "colors", "Red"],
        ["palette", "colors", "Red", "prompt"],
    ]
