"""Seeded weights for zoo architectures (writing them as PaddleX inference directories is :mod:`hpi.zoo.export`).

Latency depends on the architecture, not on the weights, so hpi stands in for official weights it cannot
download with seeded random ones. Plain random initialisation is not good enough: a random network exported
with its softmax answers near-uniformly (top-5 all about 0.0011), so two correct backends can disagree on the
top-1 class by rounding alone, and such a model can drive neither a parity check nor an accuracy gate. The
seeding here therefore makes the network behave like a trained one where it matters:

1. BatchNorm scale/shift (and PP-HGNetV2's learnable affine blocks) are drawn at random, then every BatchNorm's
   running mean and variance are *calibrated* on real photos (one forward pass with batch statistics), so each
   layer's activations have the ranges a trained network shows instead of exploding or collapsing with depth.
2. The classifier gets random weights scaled so its logits spread over several units, centred on the mean
   calibration feature (otherwise every image gets the same answer), and each calibration photo gets a
   class, raised along the direction that sets the photo's features apart from the others' until its top-1
   logit leads the top-2 by ``margin`` (e^2: top-1 probability over 7x the top-2) in every view of it (full
   image, mirrored, zoomed). Photos the random network cannot tell apart share a class.

The calibration photos are scikit-image's ``astronaut``, ``chelsea``, ``coffee`` and ``rocket`` when
scikit-image is installed (the photos hpi's tests use). Without it, procedurally generated images are used;
which set was used is returned in :class:`SeedReport` and recorded in the model's provenance file, because
the weights, and so the content hash, depend on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import cv2
import numpy as np

from hpi.errors import HpiInternalError
from hpi.preprocess.reference import preprocess_batch
from hpi.preprocess.spec import PreprocessSpec
from hpi.zoo.record import ZooModel

CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # scikit-image sample photos
DEFAULT_MARGIN = 2.0  # top-1 minus top-2 logit on every calibration view
DEFAULT_SPREAD = 4.0  # standard deviation of the random part of the logits on calibration photos
MIN_DECISIVE_MARGIN = float(np.log(2.0))  # below this, top-1 is not even twice top-2: refuse to save


@dataclass(frozen=True)
class SeedReport:
    """What seeding did, for the provenance file and the CLI."""

    seed: int  # paddle.seed / numpy seed used
    calibration: str  # "skimage:astronaut,chelsea,coffee,rocket" or "synthetic"
    min_margin: (
        float | None
    )  # smallest top-1 minus top-2 logit over the calibration views (None: no classifier)
    classes: tuple[int, ...]  # class id given to each calibration photo (empty without a classifier)


@functools.cache
def imagenet1k_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order, worded as PaddleX's label list.

    Derived from timm 1.0.31's ``timm/data/_info/imagenet_synsets.txt`` (class order) and
    ``imagenet_synset_to_lemma.txt`` (WordNet lemmas), the same names PaddleClas ships.
    """
    text = resources.files("hpi").joinpath("data/imagenet1k_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != 1000:
        raise HpiInternalError(f"hpi/data/imagenet1k_labels.txt has {len(labels)} names, expected 1000")
    return labels


def preprocess_spec(model: ZooModel) -> PreprocessSpec:
    """The preprocessing PaddleX executes for ``model`` (written to its inference.yml): its card's.

    When PaddleX's config asks for a PIL resize (the card's ``resize_backend: pil``), the filter is only declared:
    PaddleX's predictor resizes with OpenCV bilinear whatever the config says, so LINEAR with OpenCV is written.
    """
    spec = model.card.preprocessing.to_spec()
    if spec.resize_backend == "pil":
        spec = dataclasses.replace(spec, interpolation="LINEAR", resize_backend="cv2")
    return spec


def calibration_images(seed: int) -> tuple[list[np.ndarray], str]:
    """RGB uint8 images to calibrate on, and a label naming the set (see the module docstring)."""
    try:
        from skimage import data
    except ImportError:
        return _synthetic_images(seed, len(CALIBRATION_PHOTOS)), "synthetic"
    images = [np.ascontiguousarray(getattr(data, name)()[..., :3]) for name in CALIBRATION_PHOTOS]
    return images, "skimage:" + ",".join(CALIBRATION_PHOTOS)


def _synthetic_images(seed: int, count: int) -> list[np.ndarray]:
    """Smooth colour fields with random shapes: natural-image-like statistics without any data file."""
    rng = np.random.default_rng(seed + 7919)
    images = []
    for _ in range(count):
        img = np.zeros((384, 512, 3), np.float32)
        for cells, weight in ((3, 0.5), (12, 0.3), (48, 0.2)):  # roughly 1/f: coarse structure dominates
            field = rng.uniform(0, 255, (cells, cells * 4 // 3, 3)).astype(np.float32)
            img += weight * cv2.resize(field, (512, 384), interpolation=cv2.INTER_CUBIC)
        for _ in range(int(rng.integers(3, 8))):
            colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
            centre = (int(rng.integers(0, 512)), int(rng.integers(0, 384)))
            if rng.random() < 0.5:
                cv2.circle(img, centre, int(rng.integers(10, 120)), colour, -1)
            else:
                corner = (centre[0] + int(rng.integers(20, 200)), centre[1] + int(rng.integers(20, 200)))
                cv2.rectangle(img, centre, corner, colour, -1)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images


def calibration_views(images: list[np.ndarray], spec: PreprocessSpec) -> tuple[np.ndarray, list[int]]:
    """Each image as the model sees it, mirrored, and zoomed to its centre 90%: a batch and each view's image.

    The extra views stand for the small pixel differences between preprocessing paths (fused kernel, in-graph
    resize): the margin is enforced on all of them, so such differences cannot flip the top-1 class.
    """
    views, groups = [], []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        dy, dx = h // 20, w // 20
        for view in (img, img[:, ::-1], img[dy : h - dy, dx : w - dx]):
            views.append(np.ascontiguousarray(view))
            groups.append(i)
    return preprocess_batch(spec, views), groups


@contextlib.contextmanager
def _preserved_paddle_rng() -> Iterator[None]:
    """Seed Paddle's global generator for a build without changing the caller's random stream afterwards."""
    import paddle

    state = paddle.get_rng_state()
    try:
        yield
    finally:
        paddle.set_rng_state(state)


def build_seeded(model: ZooModel, seed: int) -> Any:
    """``model.build()`` with Paddle's initialisers seeded, so a seed always gives the same starting weights."""
    import paddle

    with _preserved_paddle_rng():
        paddle.seed(seed)
        return model.build()


def randomize_norm_affine(layer: Any, rng: np.random.Generator) -> None:
    """Draw BatchNorm scale in [0.5, 1.5] and shift from N(0, 0.25), and jitter learnable affine blocks.

    Trained networks have varied per-channel scales and shifts (some channels mostly off after ReLU); the
    initial all-ones / all-zeros would make every channel behave alike.
    """
    from paddle import nn

    from hpi.zoo.nets.layers import LearnableAffineBlock

    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, nn.layer.norm._BatchNormBase):
            n = sub.weight.shape[0]
            sub.weight.set_value(rng.uniform(0.5, 1.5, n).astype(np.float32))
            sub.bias.set_value(rng.normal(0.0, 0.25, n).astype(np.float32))
        elif isinstance(sub, LearnableAffineBlock):
            sub.scale.set_value(np.array([rng.uniform(0.8, 1.2)], np.float32))
            sub.bias.set_value(np.array([rng.normal(0.0, 0.1)], np.float32))


def calibrate_batchnorm(layer: Any, batch: np.ndarray, *, variance_floor: float = 0.01) -> None:
    """Set every BatchNorm's running mean/variance to the statistics its input has on ``batch``.

    One forward pass with BatchNorm layers (only) in training mode and momentum 0, so each layer sees inputs
    already normalised by the layers before it. Channels that are (nearly) constant on the batch get their
    variance raised to ``variance_floor`` x the layer's median, so that the exported network does not amplify
    tiny input differences by 1/sqrt(epsilon) (which would turn backend rounding into different answers).
    """
    import paddle
    from paddle import nn

    bns = [m for m in layer.sublayers(include_self=True) if isinstance(m, nn.layer.norm._BatchNormBase)]
    if not bns:
        return
    layer.eval()
    momenta = [bn._momentum for bn in bns]
    try:
        for bn in bns:
            bn._momentum = 0.0
            bn.train()
        with paddle.no_grad(), warnings.catch_warnings():
            # Paddle notes that training-mode BN tracks running statistics: that is the point here.
            warnings.filterwarnings("ignore", message="When training, we now always track global mean")
            layer(paddle.to_tensor(batch))
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn._momentum = momentum
        layer.eval()
    for bn in bns:
        var = bn._variance.numpy()
        floor = variance_floor * float(np.median(var)) + 1e-6
        bn._variance.set_value(np.maximum(var, floor).astype(np.float32))


def find_classifier(layer: Any) -> Any:
    """The classification layer: the ``nn.Linear`` named ``classifier`` if there is one, else the last one."""
    from paddle import nn

    linears = [(name, sub) for name, sub in layer.named_sublayers() if isinstance(sub, nn.Linear)]
    if not linears:
        raise HpiInternalError(f"{type(layer).__name__} has no nn.Linear to use as classifier")
    named = [sub for name, sub in linears if name == "classifier" or name.endswith(".classifier")]
    return named[-1] if named else linears[-1][1]


def _classifier_inputs(layer: Any, classifier: Any, batch: np.ndarray) -> np.ndarray:
    import paddle

    captured: list[np.ndarray] = []

    def hook(_layer: Any, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0].numpy().reshape(inputs[0].shape[0], -1))

    handle = classifier.register_forward_pre_hook(hook)
    try:
        with paddle.no_grad():
            layer(paddle.to_tensor(batch))
    finally:
        handle.remove()
    if len(captured) != 1:
        raise HpiInternalError(f"the classifier ran {len(captured)} times in one forward pass, expected once")
    return captured[0].astype(np.float64)


def make_decisive(
    layer: Any,
    batch: np.ndarray,
    groups: list[int],
    rng: np.random.Generator,
    *,
    spread: float = DEFAULT_SPREAD,
    margin: float = DEFAULT_MARGIN,
) -> tuple[float, tuple[int, ...]]:
    """Set the classifier so that outputs are decisive on the calibration photos (see the module docstring).

    Random networks map some photos to almost the same pooled feature (PP-LCNet puts ``chelsea`` and ``rocket``
    closer together than two views of ``astronaut``); telling those apart would need huge weights that turn
    rounding into different answers. So photos whose views overlap form one cluster and share a class. Each
    cluster's class then gets a ridge-regression "prototype" term (high on its views, zero on the others'),
    scaled up until every view leads by ``margin``; if that needs an extreme scale, the two nearest clusters
    are merged and the fit repeated.

    Returns:
        The smallest top-1 minus top-2 logit over all views, and the class given to each photo.
    """
    classifier = find_classifier(layer)
    if classifier.bias is None:
        raise HpiInternalError("the classifier has no bias; hpi's seeding centres logits through it")
    feats = _classifier_inputs(layer, classifier, batch)  # (views, D)
    mean = feats.mean(axis=0)
    centred = feats - mean
    d, c = classifier.weight.shape
    weight = rng.standard_normal((d, c))
    weight *= spread / max(float((centred @ weight).std()), 1e-12)
    random_logits = centred @ weight
    clusters = _cluster_photos(centred, groups)
    while True:
        classes = _lean_classes(random_logits, clusters)
        proto_w, proto_b = _prototypes(centred, clusters)
        scale = _scale_for_margin(random_logits, centred @ proto_w + proto_b, clusters, classes, margin)
        if scale is not None or len(clusters) == 1:
            break
        clusters = _merge_nearest(centred, clusters)
    if scale is None:  # one cluster that even a large scale cannot lift: a plain bias still makes it decisive
        scale = 0.0
    bias = np.zeros(c)
    for k, cls in enumerate(classes):
        weight[:, cls] += scale * proto_w[:, k]
        bias[cls] += scale * proto_b[k]
    logits = centred @ weight + bias
    lift = margin + 1e-3 - _margins(logits, clusters, classes).min()
    if lift > 0:  # only reached for a single cluster: raise its class everywhere
        bias[classes[0]] += lift
        logits[:, classes[0]] += lift
    classifier.weight.set_value(weight.astype(np.float32))
    classifier.bias.set_value((bias - mean @ weight).astype(np.float32))
    per_photo = {groups[v]: classes[k] for k, members in enumerate(clusters) for v in members}
    return float(_margins(logits, clusters, classes).min()), tuple(per_photo[g] for g in sorted(per_photo))


def _cluster_photos(centred: np.ndarray, groups: list[int]) -> list[list[int]]:
    """Views grouped by photo; photos whose views' spheres overlap are merged into one cluster."""
    photos = sorted(set(groups))
    members = {g: [v for v, gv in enumerate(groups) if gv == g] for g in photos}
    centre = {g: centred[members[g]].mean(axis=0) for g in photos}
    spread = {
        g: max(float(np.linalg.norm(centred[members[g]] - centre[g], axis=1).max()), 1e-9) for g in photos
    }
    parent = {g: g for g in photos}

    def root(g: int) -> int:
        while parent[g] != g:
            g = parent[g]
        return g

    for i, a in enumerate(photos):
        for b in photos[i + 1 :]:
            if np.linalg.norm(centre[a] - centre[b]) < spread[a] + spread[b]:
                parent[root(b)] = root(a)
    clusters: dict[int, list[int]] = {}
    for g in photos:
        clusters.setdefault(root(g), []).extend(members[g])
    return [sorted(v) for v in clusters.values()]


def _merge_nearest(centred: np.ndarray, clusters: list[list[int]]) -> list[list[int]]:
    """Merge the two clusters whose mean features are closest."""
    centres = [centred[m].mean(axis=0) for m in clusters]
    pairs = [(i, j) for i in range(len(clusters)) for j in range(i + 1, len(clusters))]
    i, j = min(pairs, key=lambda ij: float(np.linalg.norm(centres[ij[0]] - centres[ij[1]])))
    merged = [m for k, m in enumerate(clusters) if k not in (i, j)]
    return [*merged, sorted(clusters[i] + clusters[j])]


def _lean_classes(logits: np.ndarray, clusters: list[list[int]]) -> list[int]:
    """For each cluster, the class its views already score highest on, distinct across clusters."""
    classes: list[int] = []
    for members in clusters:
        order = np.argsort(-logits[members].mean(axis=0))
        classes.append(next(int(k) for k in order if int(k) not in classes))
    return classes


def _prototypes(centred: np.ndarray, clusters: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression of cluster indicators on the features: (D, K) weights and (K,) biases.

    The ridge (10% of the mean squared feature norm) keeps the weights from chasing tiny feature differences.
    """
    n = centred.shape[0]
    target = np.zeros((n, len(clusters)))
    for k, members in enumerate(clusters):
        target[members, k] = 1.0
    bias = target.mean(axis=0)
    gram = centred @ centred.T
    lam = 0.1 * float(np.trace(gram)) / n + 1e-12
    dual = np.linalg.solve(gram + lam * np.eye(n), target - bias)
    return centred.T @ dual, bias


def _margins(logits: np.ndarray, clusters: list[list[int]], classes: list[int]) -> np.ndarray:
    out = np.empty(logits.shape[0])
    for members, cls in zip(clusters, classes, strict=True):
        own = logits[members, cls]
        out[members] = own - np.delete(logits[members], cls, axis=1).max(axis=1)
    return out


def _scale_for_margin(
    random_logits: np.ndarray,
    proto: np.ndarray,
    clusters: list[list[int]],
    classes: list[int],
    margin: float,
    max_scale: float = 1e3,
) -> float | None:
    """Smallest prototype scale (within 1%) giving every view ``margin``; None if even ``max_scale`` fails."""

    def min_margin(scale: float) -> float:
        logits = random_logits.copy()
        logits[:, classes] += scale * proto
        return float(_margins(logits, clusters, classes).min())

    high = 1.0
    while min_margin(high) < margin:
        high *= 2.0
        if high > max_scale:
            return None
    low = high / 2.0 if high > 1.0 else 0.0
    while high - low > 0.01 * high:
        mid = (low + high) / 2.0
        low, high = (low, mid) if min_margin(mid) >= margin else (mid, high)
    return high


def seed_weights(
    layer: Any,
    spec: PreprocessSpec,
    *,
    seed: int,
    task: Literal["classification", "embedding", "detection"] = "classification",
    margin: float = DEFAULT_MARGIN,
) -> SeedReport:
    """Give a freshly built network realistic activations and, for a classifier, decisive outputs.

    Args:
        layer: the network as a zoo ``build`` returns it (eval mode, NCHW float32 input).
        spec: its preprocessing, used to feed the calibration photos.
        seed: seeds every random draw here (numpy); build the layer under the same seed (see
            :func:`build_seeded`) for a fully reproducible result.
        task: only classification networks get the classifier step.
        margin: top-1 minus top-2 logit to reach on every calibration view.
    """
    rng = np.random.default_rng(seed)
    images, calibration = calibration_images(seed)
    batch, groups = calibration_views(images, spec)
    randomize_norm_affine(layer, rng)
    calibrate_batchnorm(layer, batch)
    if task != "classification":
        layer.eval()
        return SeedReport(seed, calibration, None, ())
    min_margin, classes = make_decisive(layer, batch, groups, rng, margin=margin)
    layer.eval()
    return SeedReport(seed, calibration, min_margin, classes)
