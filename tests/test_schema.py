"""hpi/schema.py: typed records from parsed YAML, with every key and type checked and errors that name both."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from hpi.errors import InvalidConfigError, ModelSourceError
from hpi.schema import record_from_mapping, record_to_dict


@dataclasses.dataclass(frozen=True)
class Size:
    width: int
    height: int | None = None


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    layout: Literal["NCHW", "NHWC"]
    size: Size
    mean: tuple[float, float, float]
    scale: float | None
    enabled: bool = True


GOOD = {"name": "x", "layout": "NCHW", "size": {"width": 224}, "mean": [0.5, 0.5, 1], "scale": None}


def test_builds_nested_records_with_defaults_and_round_trips():
    spec = record_from_mapping(Spec, GOOD, where="spec.yaml")
    assert spec == Spec("x", "NCHW", Size(224, None), (0.5, 0.5, 1.0), None, True)
    assert isinstance(spec.mean[2], float)
    assert record_from_mapping(Spec, record_to_dict(spec), where="again") == spec
    assert record_to_dict(spec)["mean"] == [0.5, 0.5, 1.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "blue"}, "spec.yaml: unknown key 'colour'; expected one of: name, layout, size"),
        ({"size": {"width": 1, "depth": 2}}, "unknown key 'size.depth'"),
        ({"layout": "CHW"}, "key 'layout': expected one of: NCHW, NHWC, got 'CHW'"),
        ({"size": {"width": True}}, "key 'size.width': expected an integer, got True"),
        ({"size": {"width": 1, "height": 2.5}}, "key 'size.height': expected an integer or null, got 2.5"),
        ({"mean": [1, 2]}, "key 'mean': expected a list of 3 values"),
        ({"mean": [1, 2, "x"]}, r"key 'mean\[2\]': expected a number"),
        ({"enabled": "yes"}, "key 'enabled': expected true or false"),
        ({"size": [224]}, "key 'size': expected a mapping"),
    ],
)
def test_errors_name_the_source_and_the_dotted_key(change, message):
    with pytest.raises(InvalidConfigError, match=message):
        record_from_mapping(Spec, {**GOOD, **change}, where="spec.yaml")


def test_missing_keys_and_the_error_class():
    data = {k: v for k, v in GOOD.items() if k != "scale"}
    with pytest.raises(ModelSourceError, match=r"missing key 'scale' \(write null if it is unknown\)"):
        record_from_mapping(Spec, data, where="card.yaml", error=ModelSourceError)
    with pytest.raises(InvalidConfigError, match="missing key 'name'$"):
        record_from_mapping(Spec, {k: v for k, v in GOOD.items() if k != "name"}, where="spec.yaml")
    with pytest.raises(InvalidConfigError, match="spec.yaml: the spec must be a mapping, got list"):
        record_from_mapping(Spec, [GOOD], where="spec.yaml", what="the spec")
