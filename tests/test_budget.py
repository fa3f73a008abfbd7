"""`max_model_memory` and `keep_alive` as a config gives them."""

from __future__ import annotations

import pytest

from limner.budget import Budget, parse_size
from limner.config import keep_alive_seconds

GIB = 1 << 30


def test_sizes_in_bytes_units_and_shares() -> None:
    assert parse_size(12_000, None) == 12_000
    assert parse_size("12GiB", None) == 12 * GIB
    assert parse_size("1.5 GB", None) == 1_500_000_000
    assert parse_size("512mib", None) == 512 << 20
    assert parse_size("80%", 10 * GIB) == 8 * GIB
    assert parse_size("80%", None) is None


@pytest.mark.parametrize("value, message", [
    ("lots", "max_model_memory: 'lots' is not a size like '12GiB', '500MB' or '80%'"),
    ("12 parsecs", "max_model_memory: '12 parsecs' is not a size like '12GiB', '500MB' or "
                   "'80%'"),
    ("0%", "max_model_memory: a share must be above 0% and at most 100%"),
    ("150%", "max_model_memory: a share must be above 0% and at most 100%"),
    (-1, "max_model_memory: a size cannot be negative"),
])
def test_a_bad_size_fails_at_start_naming_the_setting(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Budget(value)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_each_device_has_its_own_limit() -> None:
    totals = {"cpu": 32 * GIB, "cuda:0": 80 * GIB, "cuda:1": 40 * GIB}
    budget = Budget({"cpu": "50%", "cuda": "90%", "cuda:1": "10GiB"}, totals.get)
    assert budget.limit("cpu") == 16 * GIB
    assert budget.limit("cuda") == budget.limit("cuda:0") == 72 * GIB
    assert budget.limit("cuda:1") == 10 * GIB
    one = Budget("80%", totals.get)
    assert (one.limit("cpu"), one.limit("cuda:1")) == (int(32 * GIB * 0.8), 32 * GIB)
    assert Budget(None).limit("cpu") is None


def test_keep_alive_durations() -> None:
    assert keep_alive_seconds(-1) is None
    assert keep_alive_seconds("-1") is None
    assert keep_alive_seconds(0) == 0.0
    assert keep_alive_seconds("30s") == 30.0
    assert keep_alive_seconds("5m") == 300.0
    assert keep_alive_seconds("2h") == 7200.0
    assert keep_alive_seconds("90") == 90.0
    with pytest.raises(ValueError, match=r"sdxl\.keep_alive: 'soon' is not seconds"):
        keep_alive_seconds("soon", "sdxl.keep_alive")


def test_a_modules_footprint_counts_tensors_kept_as_attributes() -> None:
    """Packed layers keep their oneDNN weights as plain attributes: the budget sees them."""
    import torch

    from limner.engines.footprint import module_bytes

    layer = torch.nn.Linear(256, 256, bias=False)
    assert module_bytes([layer]) == {"cpu": 256 * 256 * 4}
    layer.packed = torch.zeros(512, 256)
    shared = torch.nn.Sequential(layer, layer)
    assert module_bytes([shared]) == {"cpu": 256 * 256 * 4 + 512 * 256 * 4}
