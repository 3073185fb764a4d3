"""Model cards: the shipped cards load and hold the seeds' figures; the schema rejects what it does not know."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from hpi.cards import (
    TEST_ENVIRONMENTS,
    ModelCard,
    core_models,
    default_cards_dir,
    dump_card,
    get_card,
    load_cards,
    parse_card,
    select_cards,
)
from hpi.errors import InvalidConfigError, ModelSourceError, UnknownModelError

REPO = Path(__file__).resolve().parents[1]
SEEDS = Path("/work/shared/seeds")

CORE = {
    "CLIP_vit_base_patch16_224",
    "MobileNetV3_small_x1_0",
    "PP-HGNet_small",
    "PP-HGNetV2-B0",
    "PP-HGNetV2-B4",
    "PP-HGNetV2-B6",
    "PP-LCNet_x1_0",
    "ResNet50",
    "SwinTransformer_tiny_patch4_window7_224",
}


@pytest.fixture(scope="module")
def cards() -> dict[str, ModelCard]:
    return load_cards()


def _card_text(name: str = "PP-LCNet_x1_0") -> str:
    return (Path(str(default_cards_dir())) / f"{name}.yaml").read_text(encoding="utf-8")


def test_all_82_cards_load(cards: dict[str, ModelCard]) -> None:
    assert len(cards) == 82
    tasks = [c.task for c in cards.values()]
    assert tasks.count("classification") == 80
    assert cards["PP-ShiTuV2_det"].task == "detection"
    assert cards["PP-ShiTuV2_rec"].task == "embedding"
    assert all(c.test_env in TEST_ENVIRONMENTS for c in cards.values())


def test_cards_ship_inside_the_package() -> None:
    assert Path(str(default_cards_dir())).resolve() == REPO / "hpi" / "data" / "model_cards"


def test_core_models_and_their_published_figures(cards: dict[str, ModelCard]) -> None:
    assert {c.name for c in core_models(cards)} == CORE
    lcnet = cards["PP-LCNet_x1_0"]
    assert (lcnet.latency.cpu_ms.normal, lcnet.latency.cpu_ms.hpi) == (4.03, 1.35)
    assert (lcnet.latency.gpu_ms.normal, lcnet.latency.gpu_ms.hpi) == (2.35, 0.47)
    assert lcnet.metrics.top1 == 71.32
    assert lcnet.size_mb == 10.5
    resnet = cards["ResNet50"]
    assert (resnet.metrics.top1, resnet.latency.cpu_ms.normal, resnet.latency.cpu_ms.hpi) == (
        76.5,
        15.04,
        11.63,
    )
    swin = cards["SwinTransformer_tiny_patch4_window7_224"]
    assert (swin.latency.gpu_ms.normal, swin.latency.gpu_ms.hpi, swin.size_mb) == (6.66, 2.15, 100.1)
    b6 = cards["PP-HGNetV2-B6"]
    assert (b6.metrics.top1, b6.latency.cpu_ms.normal, b6.latency.cpu_ms.hpi) == (86.30, 62.29, 62.29)


def test_other_editions_and_units(cards: dict[str, ModelCard]) -> None:
    lcnet = cards["PP-LCNet_x1_0"].legacy_latency
    assert lcnet is not None and (lcnet.gpu_ms, lcnet.cpu_ms) == (3.84845, 9.23735)
    fasternet = cards["FasterNet-L"].legacy_latency
    assert fasternet is not None and fasternet.cpu_ms is None  # seed 000 prints "-"
    clip_l = cards["CLIP_vit_large_patch14_224"]
    assert (clip_l.size_mb, clip_l.size_published) == (1040.0, "1.04 G")
    det, rec = cards["PP-ShiTuV2_det"], cards["PP-ShiTuV2_rec"]
    assert (det.metrics.map, det.metrics.map_50, det.latency.gpu_ms.normal, det.size_mb) == (
        41.5,
        62.0,
        12.79,
        27.54,
    )
    assert (rec.metrics.recall_at_1, rec.latency.cpu_ms.hpi, rec.legacy_latency) == (84.2, 4.04, None)
    assert det.test_env == rec.test_env == "seed-004"


def test_preprocessing_defaults(cards: dict[str, ModelCard]) -> None:
    assert cards["ResNet50"].preprocessing.resize_short == 256 and cards["ResNet50"].input_size == 224
    swin384 = cards["SwinTransformer_base_patch4_window12_384"].preprocessing
    assert (swin384.resize_short, swin384.crop, swin384.interpolation, swin384.resize_backend) == (
        438,
        384,
        "BICUBIC",
        "pil",
    )
    assert cards["ConvNeXt_large_384"].input_size == 384
    assert cards["PP-ShiTuV2_rec"].preprocessing.resize_to == (224, 224)
    from hpi.preprocess.spec import PreprocessSpec

    # A card default is the spec PaddleX's own ops list gives (here PP-HGNetV2-B4's Infer.transforms).
    ops = [
        {"ResizeImage": {"resize_short": 232, "interpolation": "bicubic", "backend": "pil"}},
        {"CropImage": {"size": 224}},
        {
            "NormalizeImage": {
                "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225],
                "scale": "1.0/255.0",
            }
        },
        {"ToCHWImage": None},
    ]
    assert cards["PP-HGNetV2-B4"].preprocessing.to_spec() == PreprocessSpec.from_transform_ops(ops)
    spec = cards["PP-LCNet_x1_0"].preprocessing.to_spec()
    assert (spec.resize_short, spec.crop, spec.mean, spec.channels_first) == (
        256,
        (224, 224),
        (0.485, 0.456, 0.406),
        True,
    )


@pytest.mark.skipif(not SEEDS.is_dir(), reason="seed documents not available")
def test_committed_cards_equal_a_fresh_extraction(
    cards: dict[str, ModelCard], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("extract_cards", REPO / "scripts" / "extract_cards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "extract_cards", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    fresh, _ = module.build_cards(SEEDS)
    measured = set(module.MEASURED_FIELDS)
    for new in fresh:
        old = cards[new.name]
        for field in ModelCard.__dataclass_fields__:
            if field not in measured:
                assert getattr(old, field) == getattr(new, field), (
                    f"{new.name}.{field} differs from the seeds"
                )


def test_unknown_key_is_rejected_with_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "PP-LCNet_x1_0.yaml"
    path.write_text(_card_text() + "favourite_colour: blue\n", encoding="utf-8")
    with pytest.raises(ModelSourceError) as err:
        load_cards(tmp_path)
    assert "favourite_colour" in str(err.value) and str(path) in str(err.value)


def test_unknown_nested_key_is_named_with_its_path() -> None:
    text = _card_text().replace("    hpi: 1.35\n", "    hpi: 1.35\n    turbo: 0.5\n")
    with pytest.raises(ModelSourceError, match=r"latency\.cpu_ms\.turbo"):
        parse_card(text, where="x/PP-LCNet_x1_0.yaml")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("  top1: 71.32\n", "  top1: very good\n", "metrics.top1"),
        ("input_size: 224\n", "input_size: 224.5\n", "input_size"),
        ("core: true\n", "core: 1\n", "core"),
        ("task: classification\n", "task: segmentation\n", "task"),
        ("  mean: [0.485, 0.456, 0.406]\n", "  mean: [0.485, 0.456]\n", "preprocessing.mean"),
    ],
)
def test_wrong_types_are_rejected(old: str, new: str, key: str) -> None:
    text = _card_text()
    assert old in text
    with pytest.raises(ModelSourceError) as err:
        parse_card(text.replace(old, new), where="cards/PP-LCNet_x1_0.yaml")
    assert key in str(err.value) and "cards/PP-LCNet_x1_0.yaml" in str(err.value)


def test_missing_key_and_wrong_file_name_are_rejected() -> None:
    with pytest.raises(ModelSourceError, match="missing key 'flops'"):
        parse_card(re.sub(r"(?m)^flops: .*\n", "", _card_text()), where="PP-LCNet_x1_0.yaml")
    with pytest.raises(ModelSourceError, match="file is named"):
        parse_card(_card_text(), where="somewhere/ResNet50.yaml")


def test_dump_and_parse_round_trip(cards: dict[str, ModelCard]) -> None:
    for card in cards.values():
        assert parse_card(dump_card(card), where=f"{card.name}.yaml") == card


def test_get_card_suggests_close_names() -> None:
    assert get_card("ResNet50").family == "ResNet"
    with pytest.raises(UnknownModelError, match="PP-LCNet_x1_0"):
        get_card("PPLCNet_x1_0")


def test_select_cards(cards: dict[str, ModelCard]) -> None:
    starnet = select_cards(cards, family="starnet")
    assert [c.name for c in starnet] == ["StarNet-S1", "StarNet-S2", "StarNet-S3", "StarNet-S4"]
    assert [c.name for c in select_cards(cards, task="embedding")] == ["PP-ShiTuV2_rec"]
    assert [c.name for c in select_cards(list(cards.values()), core=True)] == sorted(CORE)
    with pytest.raises(InvalidConfigError, match="available: .*ResNet"):
        select_cards(cards, family="VGG")
    with pytest.raises(InvalidConfigError, match="unknown task 'segmentation'"):
        select_cards(cards, task="segmentation")


# ---------------------------------------------------------------------------------------------------------
# Measured fields: a card's params must still be what the zoo builds.


def _zoo_module_of(name: str):  # noqa: ANN202 - returns a ZooModel or None
    from hpi.zoo.catalogue import zoo_models

    return zoo_models().get(name)


_MEASURED = sorted(name for name, card in load_cards().items() if card.params is not None)


@pytest.mark.slow
@pytest.mark.parametrize("name", _MEASURED)
def test_measured_params_match_the_zoo_build(name: str) -> None:
    paddle = pytest.importorskip("paddle")
    from hpi.zoo.nets.fidelity import count_params

    card = get_card(name)
    model = _zoo_module_of(name)
    assert model is not None, f"{name} has params on its card but no zoo module defines it any more"
    # LazyGuard builds the graph without allocating weights, so even the largest models count in well under 1 s.
    with paddle.LazyGuard():
        net = model.build()
    assert card.buildable
    assert count_params(net, include_bn_stats=True) == card.params
