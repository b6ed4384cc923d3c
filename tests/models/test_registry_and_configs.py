"""Model registry lookups and config parsing / validation errors."""

from __future__ import annotations

import pytest
import torch

from neurofed.models import (
    DynUNetConfig,
    ModelName,
    MultitaskUNetConfig,
    Norm,
    ResidualUNetConfig,
    SFCNConfig,
    build_model,
    default_plan,
    get_model_spec,
    model_names,
    parse_model_config,
)


def test_unknown_model_name_suggests_the_closest() -> None:
    with pytest.raises(
        ValueError, match=r"unknown model 'residual-unt' \(did you mean 'residual-unet'\?\)"
    ):
        build_model("residual-unt", in_channels=1, out_channels=1)


def test_unknown_model_name_lists_the_registered_names() -> None:
    with pytest.raises(ValueError, match="available: residual-unet, multitask-unet, dynunet, sfcn"):
        build_model("transformer", in_channels=1, out_channels=1)


def test_registry_holds_the_four_models() -> None:
    assert model_names() == tuple(m.value for m in ModelName)


def test_mapping_config_is_parsed_with_defaults_for_missing_fields() -> None:
    config = parse_model_config("residual-unet", {"base_filters": 30, "norm": "batch"})
    assert config == ResidualUNetConfig(base_filters=30, norm=Norm.BATCH)
    assert isinstance(config, ResidualUNetConfig) and config.norm is Norm.BATCH


def test_unknown_config_field_suggests_the_closest() -> None:
    with pytest.raises(
        ValueError, match=r"unknown field 'base_filter' \(did you mean 'base_filters'\?\)"
    ):
        parse_model_config("residual-unet", {"base_filter": 8})


def test_config_of_another_model_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expected a SFCNConfig"):
        build_model("sfcn", ResidualUNetConfig(), in_channels=1, out_channels=1)


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: ResidualUNetConfig(base_filters=0), "ResidualUNetConfig.base_filters = 0"),
        (lambda: ResidualUNetConfig(depth=1), "ResidualUNetConfig.depth = 1"),
        (lambda: ResidualUNetConfig(dropout=1.5), "ResidualUNetConfig.dropout = 1.5"),
        (lambda: MultitaskUNetConfig(pool_size=(1, 2)), "MultitaskUNetConfig.pool_size = (1, 2)"),
        (lambda: MultitaskUNetConfig(num_grades=1), "MultitaskUNetConfig.num_grades = 1"),
        (lambda: SFCNConfig(width=0), "SFCNConfig.width = 0"),
        (lambda: SFCNConfig(channels=(32,)), "SFCNConfig.channels = (32,)"),
        (lambda: DynUNetConfig(plan="auto"), "DynUNetConfig.plan = 'auto'"),
    ],
)
def test_invalid_values_name_class_field_value_and_fix(factory, field: str) -> None:
    with pytest.raises(ValueError, match="is invalid: ") as error:
        factory()
    assert str(error.value).startswith(field)


def test_bad_channel_counts_are_rejected_before_building() -> None:
    with pytest.raises(ValueError, match="in_channels = 0 is invalid"):
        build_model("sfcn", in_channels=0, out_channels=1)


def test_nested_plan_round_trips_through_json() -> None:
    plan = default_plan((32, 32, 16), (1.0, 1.0, 2.0), base_filters=4, max_filters=16)
    config = DynUNetConfig(plan=plan, norm=Norm.BATCH)
    data = config.to_json()
    assert data["plan"]["strides"][1] == [2, 2, 1] or data["plan"]["strides"][1] == [2, 2, 2]
    assert DynUNetConfig.from_json(data) == config


def test_width_scales_sfcn_channels() -> None:
    config = SFCNConfig(width=0.0625)
    net = build_model("sfcn", config, in_channels=1, out_channels=1)
    assert config.scaled_channels == (2, 4, 8, 16, 16, 4)
    assert net.head.in_features == 4
    assert net.eval()(torch.zeros(1, 1, 40, 40, 40)).shape == (1, 1)  # any size >= 32 works


def test_unknown_enum_value_lists_the_allowed_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"ResidualUNetConfig\.norm = 'layer' is invalid: use one of instance, batch",
    ):
        parse_model_config("residual-unet", {"norm": "layer"})


def test_spec_reports_the_input_divisor_of_a_config() -> None:
    assert get_model_spec("residual-unet").spatial_divisor({"depth": 3}) == (4, 4, 4)
    assert get_model_spec("multitask-unet").spatial_divisor() == (1, 8, 8)
