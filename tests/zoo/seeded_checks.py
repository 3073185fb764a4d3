"""Helpers for the PP-LCNet / PP-HGNet zoo tests: export a seeded model once, run it with Paddle Inference.

Tests run the saved ``inference.json`` through ``paddle.inference`` on CPU, the way hpi's Paddle backend and
PaddleX do, and feed photos preprocessed by hpi's reference chain from the model's own ``inference.yml``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# scikit-image photos: the four hpi calibrates on, and real images it never saw while seeding.
CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
HELD_OUT_PHOTOS = ("hubble_deep_field", "immunohistochemistry", "colorwheel")


def photo(name: str) -> np.ndarray:
    """A scikit-image sample image as RGB uint8 HWC."""
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)()[..., :3])


def paddle_inference(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    """Run a PaddleX inference directory with Paddle Inference on CPU (2 threads) and return the output."""
    from paddle.inference import Config, create_predictor

    from hpi.source import ModelSource

    source = ModelSource.from_path(model_dir)
    config = Config(str(source.model_file), str(source.params_file))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    config.disable_glog_info()
    predictor = create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def preprocessed(model_dir: Path, names: tuple[str, ...]) -> np.ndarray:
    """The named photos as the model's inference.yml says to feed them (hpi's reference chain)."""
    from hpi.preprocess.reference import preprocess_batch
    from hpi.source import ModelSource

    spec = ModelSource.from_path(model_dir).spec.preprocess
    return preprocess_batch(spec, [photo(n) for n in names])


def top2_ratio(probs: np.ndarray) -> np.ndarray:
    """Top-1 over top-2 probability for each row."""
    top = np.sort(probs, axis=1)[:, ::-1]
    return top[:, 0] / np.maximum(top[:, 1], 1e-30)


def export(model_name: str, directory: Path, seed: int = 0):
    """Export one of this family's zoo models (seeded) into ``directory``; returns the SeedReport."""
    from hpi.zoo.catalogue import pphgnet, pphgnetv2, pplcnet, pplcnetv2
    from hpi.zoo.export import export_zoo_model

    models = {m.name: m for mod in (pplcnet, pplcnetv2, pphgnet, pphgnetv2) for m in mod.MODELS}
    directory.mkdir(parents=True, exist_ok=True)
    return export_zoo_model(models[model_name], directory, seed=seed)


def check_exported_classifier(model_dir: Path, model_name: str) -> None:
    """The shared assertions on an exported seeded classifier (see the family tests)."""
    from hpi.source import ModelSource

    source = ModelSource.from_path(model_dir, model_name=model_name)
    assert source.format == "paddle" and source.model_file.name == "inference.json"
    assert source.spec.task == "classification"
    assert source.spec.topk is not None and source.spec.topk.topk == 5
    labels = source.spec.topk.label_list
    assert labels is not None and len(labels) == 1000 and labels[0] == "tench, Tinca tinca"

    probs = paddle_inference(model_dir, preprocessed(model_dir, CALIBRATION_PHOTOS))
    assert probs.shape == (len(CALIBRATION_PHOTOS), 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)  # ends in softmax
    ratios = top2_ratio(probs)
    assert (ratios > 2.0).all(), (
        f"{model_name}: top-1/top-2 probability ratios {ratios} on {CALIBRATION_PHOTOS}"
    )
