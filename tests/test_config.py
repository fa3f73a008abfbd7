"""Settings: defaults < TOML < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from limner.catalogue import Catalogue
from limner.config import EngineConfig, load_settings
from limner.errors import NotFound


def test_defaults_bind_locally_and_serve_the_embedded_model() -> None:
    settings = load_settings(environ={})
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.engines == (EngineConfig("limner-emoji", "embedded"),)
    assert settings.base_url == "http://127.0.0.1:8000"


def test_layers(tmp_path: Path) -> None:
    config = tmp_path / "limner.toml"
    config.write_text(
        'port = 9000\napi_keys = ["a"]\n'
        '[engines.sd]\nkind = "diffusers"\npath = "/m/sd"\nguidance = 0.0\n'
        '[models]\n"dall-e-3" = "sd"\n'
    )
    settings = load_settings(config, environ={"LIMNER_PORT": "9100",
                                              "LIMNER_API_KEYS": "x, y"}, host="0.0.0.0")
    assert settings.port == 9100 and settings.api_keys == ("x", "y")
    assert settings.host == "0.0.0.0" and settings.base_url == "http://127.0.0.1:9100"
    assert settings.engines == (EngineConfig("sd", "diffusers", "/m/sd", {"guidance": 0.0}),)
    assert settings.default_engine == "sd" and settings.models == {"dall-e-3": "sd"}


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings(config, environ={})


def test_catalogue_maps_names_to_engines() -> None:
    catalogue = Catalogue(["emoji", "sd"], "emoji", {"dall-e-3": "sd", "art": "sd"})
    assert catalogue.resolve("dall-e-3").engine == "sd"
    assert catalogue.resolve("gpt-image-1").engine == "emoji"
    assert catalogue.resolve("art").rules.free_size
    with pytest.raises(NotFound):
        catalogue.resolve("dall-e-4")
    with pytest.raises(ValueError):
        Catalogue(["emoji"], "emoji", {"x": "missing"})


def test_several_models_their_lifetimes_adapters_and_admins(tmp_path: Path) -> None:
    config = tmp_path / "limner.toml"
    config.write_text(
        'admin_keys = ["ops"]\nmax_model_memory = { cpu = "16GiB", cuda = "90%" }\n'
        'keep_alive = "5m"\nmax_request_loras = 2\n'
        '[engines.fast]\nkind = "fake"\npreload = true\n'
        '[engines.good]\nkind = "fake"\nkeep_alive = -1\n'
        '[loras]\nink = "/loras/ink.safetensors"\n'
        '[models]\n"dall-e-3" = { engine = "good", lora = [{ name = "ink", scale = 0.5 }] }\n'
        '"dall-e-2" = { engine = "fast", lora = ["ink"] }\n'
    )
    settings = load_settings(config, environ={"LIMNER_ADMIN_KEYS": "ops, root"})
    assert settings.admin_keys == ("ops", "root")
    assert settings.max_model_memory == {"cpu": "16GiB", "cuda": "90%"}
    assert (settings.keep_alive, settings.max_request_loras) == ("5m", 2)
    assert settings.engines == (EngineConfig("fast", "fake", preload=True),
                                EngineConfig("good", "fake", keep_alive=-1))
    assert settings.loras == {"ink": "/loras/ink.safetensors"}
    catalogue = Catalogue(["fast", "good"], "fast", settings.models)
    three, two = catalogue.resolve("dall-e-3"), catalogue.resolve("dall-e-2")
    assert (three.engine, three.adapters) == ("good", (("ink", 0.5),))
    assert (two.engine, two.adapters) == ("fast", (("ink", 1.0),))
    with pytest.raises(ValueError, match="each lora is a name or"):
        Catalogue(["fast"], "fast", {"x": {"engine": "fast", "lora": [{"scale": 1}]}})
    with pytest.raises(ValueError, match="unknown keys"):
        Catalogue(["fast"], "fast", {"x": {"engine": "fast", "loras": []}})


def test_the_encoder_pool_fills_the_cores_only_where_a_gpu_draws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from limner import service

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert (service.encoder_threads(gpu=False), service.encoder_threads(gpu=True)) == (4, 15)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert (service.encoder_threads(gpu=False), service.encoder_threads(gpu=True)) == (1, 1)
    assert load_settings(environ={"LIMNER_ENCODERS": "3"}).encoders == 3
