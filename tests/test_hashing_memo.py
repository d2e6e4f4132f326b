"""config_hash remembers the digests of configs that cannot change in place, and only those."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from phys_pipeline.hashing import _CONFIG_DIGESTS, config_hash
from phys_pipeline.types import StageConfig


class LensCfg(StageConfig):
    focal_mm: float = 50.0
    coating: str = "AR"
    profile: object = None


def test_a_config_of_plain_values_is_remembered():
    lens = LensCfg(focal_mm=75.0)
    first = config_hash(lens)
    assert _CONFIG_DIGESTS.get(lens) == first
    assert config_hash(lens) == first == config_hash(LensCfg(focal_mm=75.0))


def test_writing_into_tags_is_noticed():
    lens = LensCfg()
    before = config_hash(lens)
    lens.tags["batch"] = 7
    assert config_hash(lens) != before
    assert config_hash(lens) == config_hash(LensCfg(tags={"batch": 7}))


def test_a_field_replaced_behind_pydantics_back_is_noticed():
    lens = LensCfg(focal_mm=75.0)
    config_hash(lens)
    object.__setattr__(lens, "focal_mm", 100.0)
    assert config_hash(lens) == config_hash(LensCfg(focal_mm=100.0))


def test_a_config_holding_an_array_is_hashed_afresh_every_time():
    lens = LensCfg(profile=np.linspace(0.0, 1.0, 8))
    before = config_hash(lens)
    assert _CONFIG_DIGESTS.get(lens) is None
    lens.profile[3] = 9.0
    assert config_hash(lens) != before


def test_entries_go_with_their_configs():
    lens = LensCfg(focal_mm=12.5)
    config_hash(lens)
    key = id(lens)
    assert key in _CONFIG_DIGESTS._entries
    del lens
    gc.collect()
    assert key not in _CONFIG_DIGESTS._entries


class BeamCfg(StageConfig):
    profile: Path = Path("beam.npy")


def test_a_config_naming_a_file_is_hashed_afresh_every_time(tmp_path):
    beam = tmp_path / "beam.npy"
    beam.write_bytes(b"gaussian")
    cfg = BeamCfg(profile=beam)
    before = config_hash(cfg)
    assert _CONFIG_DIGESTS.get(cfg) is None
    beam.write_bytes(b"top-hat!")
    assert config_hash(cfg) != before
