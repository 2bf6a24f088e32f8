"""The models file: the packaged one, a custom one, and errors that name file and entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import ModelEntry, ModelsFileError, load_models


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_file_has_exactly_the_four_models():
    models = load_models()
    assert list(models) == [
        "sd15-lcm",
        "tiny-random",
        "sdxl-lightning",
        "tiny-random-xl",
        "toy",
    ]
    sd15 = models["sd15-lcm"]
    assert sd15.source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (sd15.family, sd15.lora) == ("sd15", "latent-consistency/lcm-lora-sdv1-5")
    assert (sd15.scheduler, sd15.steps, sd15.guidance_scale, sd15.native_size) == (
        "lcm",
        5,
        1.0,
        512,
    )
    assert sd15.description
    tiny = models["tiny-random"]
    assert (tiny.source, tiny.lora) == ("builtin:tiny-random", "builtin:tiny-random-lcm-lora")
    assert (tiny.family, tiny.steps, tiny.guidance_scale, tiny.native_size, tiny.dtype) == (
        "sd15",
        5,
        1.0,
        256,
        "float32",
    )
    assert tiny.description == (
        "random-weight tiny SD1.5 architecture built from configs, for tests and offline demos"
    )
    xl = models["sdxl-lightning"]
    assert (xl.family, xl.scheduler, xl.steps, xl.guidance_scale, xl.native_size) == (
        "sdxl",
        "euler",
        5,
        0.0,
        1024,
    )
    assert xl.unet == "ByteDance/SDXL-Lightning/sdxl_lightning_4step_unet.safetensors"
    tiny_xl = models["tiny-random-xl"]
    assert (tiny_xl.family, tiny_xl.scheduler, tiny_xl.lora) == (
        "sdxl",
        "euler",
        "builtin:tiny-random-xl-lightning-lora",
    )


def test_entry_defaults():
    entry = ModelEntry(name="m", source="some/hub-id")
    assert (entry.family, entry.lora, entry.lora_scale, entry.scheduler) == (
        "sd15",
        None,
        1.0,
        "lcm",
    )
    assert (entry.steps, entry.guidance_scale, entry.native_size) == (5, 1.0, 512)
    assert (entry.dtype, entry.tiny_vae, entry.description) == ("auto", None, "")


def test_custom_file_is_read_in_order(tmp_path):
    path = write(
        tmp_path,
        """
[models.zeta]
source = "/weights/zeta.safetensors"
steps = 4

[models.alpha]
source = "org/alpha"
family = "sdxl"
native_size = 1024
dtype = "bfloat16"
tiny_vae = "madebyollin/taesdxl"
""",
    )
    models = load_models(path)
    assert list(models) == ["zeta", "alpha"]
    assert models["zeta"].name == "zeta" and models["zeta"].steps == 4
    assert (models["alpha"].family, models["alpha"].native_size) == ("sdxl", 1024)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('[models.broken]\nsource = "x"\nsteps = 99\n', ["[models.broken]", "steps"]),
        ('[models.broken]\nsource = "x"\nnative_size = 500\n', ["[models.broken]", "native_size"]),
        ('[models.broken]\nsource = "x"\nfamily = "sd3"\n', ["[models.broken]", "family"]),
        ('[models.broken]\nsourse = "x"\n', ["[models.broken]", "sourse", "source"]),
        ('[models.broken]\nsource = "x"\nname = "other"\n', ["[models.broken]", "other"]),
        ('[models."bad name"]\nsource = "x"\n', ["[models.bad name]", "name"]),
        ("[models]\nbroken = 3\n", ["[models.broken]", "table"]),
        ('[model.x]\nsource = "x"\n', ["unknown top-level", "model"]),
        ("", ["no [models.<name>] entries"]),
        ("[models.x\n", ["not valid TOML"]),
    ],
)
def test_bad_file_errors_name_the_file_and_the_entry(tmp_path, body, words):
    path = write(tmp_path, '[models.good]\nsource = "x"\n\n' * ("models" in body) + body)
    with pytest.raises(ModelsFileError) as exc:
        load_models(path)
    message = str(exc.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file_is_a_models_file_error(tmp_path):
    with pytest.raises(ModelsFileError, match="cannot read"):
        load_models(tmp_path / "absent.toml")
