"""Load an evaluation dataset and choose training / held-out images.

Layout (as in ``../shared/datasets``)::

    DATASET_DIR/
      images/<stem>.<ext>     any image format pointseg reads
      masks/<stem>.png        single-channel uint8 class ids (0..K-1), same stems as images/
      classes.json            {"0": "background", "1": "crack", ...}
      meta.json               optional; "ignore_index": int or null

Mask pixels equal to the ignore index (255 unless meta.json names another) are excluded from every metric
and never receive a click. In memory, ignore pixels are always stored as :data:`IGNORE` (255).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pointseg.errors import PointsegError

IGNORE = 255
"""Value of ignore pixels in masks returned by :meth:`SegmentationDataset.load_mask`."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class SegmentationDataset:
    """A folder of images with dense ground-truth masks.

    Attributes
    ----------
    root : Path
    name : str
        Folder name (used in reports).
    classes : tuple of str
        Class names; the class id is the position.
    ignore_index : int
        Mask value that means "not labelled" in the files (mapped to :data:`IGNORE` when loaded).
    stems : tuple of str
        Sorted stems that have both an image and a mask.
    max_megapixels : float or None
        When set, images (and masks, nearest-neighbour) larger than this are downscaled on load.
    """

    root: Path
    name: str
    classes: tuple[str, ...]
    ignore_index: int
    stems: tuple[str, ...]
    image_paths: dict[str, Path] = field(repr=False)
    mask_paths: dict[str, Path] = field(repr=False)
    max_megapixels: float | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _target_size(self, width: int, height: int) -> tuple[int, int] | None:
        if self.max_megapixels is None:
            return None
        mp = width * height / 1e6
        if mp <= self.max_megapixels:
            return None
        scale = (self.max_megapixels / mp) ** 0.5
        return max(1, round(width * scale)), max(1, round(height * scale))

    def load_image(self, stem: str) -> np.ndarray:
        """Return the image as an HxWx3 uint8 array (grey images replicated to 3 channels)."""
        image = read_rgb(self.image_paths[stem])
        size = self._target_size(image.shape[1], image.shape[0])
        if size is not None:
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        return image

    def load_mask(self, stem: str) -> np.ndarray:
        """Return the mask as an HxW uint8 array of class ids, ignore pixels set to :data:`IGNORE`."""
        path = self.mask_paths[stem]
        try:
            with Image.open(path) as im:
                if im.mode not in ("L", "P", "I", "I;16", "1"):
                    raise PointsegError(
                        f"mask {path} has mode {im.mode}; masks must be single-channel class ids "
                        "(0..K-1, ignore pixels 255) - convert it to an 8-bit grey or palette PNG"
                    )
                raw = np.asarray(im)
        except OSError as exc:
            raise PointsegError(f"cannot read mask {path}: {exc}; check the file") from exc
        raw = raw.astype(np.int64)
        ignore = raw == self.ignore_index
        bad = ~ignore & ((raw < 0) | (raw >= self.n_classes))
        if bad.any():
            value = int(raw[bad][0])
            raise PointsegError(
                f"mask {path} contains value {value}, but classes.json lists {self.n_classes} classes "
                f"(ids 0..{self.n_classes - 1}) and the ignore index is {self.ignore_index}; "
                "fix the mask or classes.json/meta.json"
            )
        mask = np.where(ignore, IGNORE, raw).astype(np.uint8)
        size = self._target_size(mask.shape[1], mask.shape[0])
        if size is not None:
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        return mask


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as HxWx3 uint8 with the core's reader (16-bit, grey, RGBA, bomb guard)."""
    from pointseg.imageio import read_image

    return np.ascontiguousarray(read_image(path))


def classes_present(mask: np.ndarray, n_classes: int) -> tuple[int, ...]:
    """Class ids that occur in ``mask`` (ignore pixels excluded), ascending."""
    counts = np.bincount(mask.ravel(), minlength=256)[:n_classes]
    return tuple(int(c) for c in np.flatnonzero(counts))


def load_dataset(path: str | Path, max_megapixels: float | None = None) -> SegmentationDataset:
    """Read a dataset folder (see the module docstring) and check that it is consistent.

    Raises
    ------
    PointsegError
        When a folder or file is missing, classes.json is malformed, or images and masks do not match.

    Examples
    --------
    >>> ds = load_dataset("../shared/datasets/crackforest")   # doctest: +SKIP
    >>> ds.classes, len(ds.stems)                              # doctest: +SKIP
    (('background', 'crack'), 35)
    """
    root = Path(path)
    if not root.is_dir():
        raise PointsegError(f"dataset folder {root} does not exist; pass a folder with images/, masks/ and classes.json")
    images_dir, masks_dir = root / "images", root / "masks"
    for sub in (images_dir, masks_dir):
        if not sub.is_dir():
            raise PointsegError(f"{root} has no {sub.name}/ folder; a dataset needs images/ and masks/ with the same stems")
    classes_file = root / "classes.json"
    if not classes_file.is_file():
        raise PointsegError(f"{root} has no classes.json; write one like {{\"0\": \"background\", \"1\": \"defect\"}}")
    try:
        raw_classes = json.loads(classes_file.read_text())
        ids = sorted(int(k) for k in raw_classes)
    except (ValueError, TypeError, AttributeError) as exc:
        raise PointsegError(f"{classes_file} is not a JSON object mapping \"0\", \"1\", ... to class names ({exc})") from exc
    if ids != list(range(len(ids))) or len(ids) < 2:
        raise PointsegError(f"{classes_file} must map consecutive ids 0..K-1 (K >= 2) to names; found ids {ids}")
    classes = tuple(str(raw_classes[str(i)]) for i in ids)

    ignore_index = IGNORE
    meta_file = root / "meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError as exc:
            raise PointsegError(f"{meta_file} is not valid JSON ({exc}); fix or remove it") from exc
        value = meta.get("ignore_index") if isinstance(meta, dict) else None
        if value is not None:
            ignore_index = int(value)
            if 0 <= ignore_index < len(classes):
                raise PointsegError(
                    f"{meta_file}: ignore_index {ignore_index} is also a class id in classes.json; choose another value"
                )

    image_paths = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    mask_paths = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    stems = tuple(sorted(set(image_paths) & set(mask_paths)))
    if not stems:
        raise PointsegError(f"{root}: no image in images/ has a mask with the same stem in masks/")
    missing = sorted(set(image_paths) - set(mask_paths))
    if missing:
        raise PointsegError(
            f"{root}: {len(missing)} image(s) have no mask (e.g. {missing[0]}); add masks/{missing[0]}.png or remove the image"
        )
    return SegmentationDataset(
        root=root,
        name=root.resolve().name,
        classes=classes,
        ignore_index=ignore_index,
        stems=stems,
        image_paths={s: image_paths[s] for s in stems},
        mask_paths={s: mask_paths[s] for s in stems},
        max_megapixels=max_megapixels,
    )


@dataclass(frozen=True)
class Split:
    """Training ("interactive") and held-out ("transfer") stems for one seed."""

    train: tuple[str, ...]
    test: tuple[str, ...]


def evenly_spaced(items: list[str] | tuple[str, ...], n: int) -> tuple[str, ...]:
    """``n`` items spread evenly over ``items`` (first and last included), in order."""
    items = list(items)
    if n >= len(items):
        return tuple(items)
    if n <= 0:
        return ()
    if n == 1:
        return (items[len(items) // 2],)
    idx = np.round(np.linspace(0, len(items) - 1, n)).astype(int)
    return tuple(items[i] for i in idx)


def choose_split(
    stems: tuple[str, ...] | list[str],
    present: dict[str, tuple[int, ...]],
    seed: int,
    train_images: int = 3,
    train_stems: tuple[str, ...] | list[str] | None = None,
    test: int | None = None,
) -> Split:
    """Choose the training and held-out images for one seed.

    Parameters
    ----------
    stems : all stems of the dataset, sorted.
    present : stem -> class ids present in its mask (used to prefer informative training images).
    seed : the evaluation seed; the training images are drawn with ``numpy.random.default_rng([seed, 1])``.
    train_images : how many training images to draw (ignored when ``train_stems`` is given).
    train_stems : fixed training images (the same for every seed).
    test : number of held-out images, evenly spaced over the sorted stems that are not named training
        images, so the held-out set is the same for every seed; ``None`` = every image not used for training.

    Training images are drawn among images that contain at least two classes (a user annotates images that
    show the defect); when fewer than ``train_images`` such images exist, among all remaining images.
    """
    stems = list(stems)
    if train_stems:
        unknown = [s for s in train_stems if s not in present]
        if unknown:
            raise PointsegError(f"training image {unknown[0]!r} is not in the dataset; use a stem from images/")
        train = tuple(dict.fromkeys(train_stems))
        rest = [s for s in stems if s not in train]
        held = evenly_spaced(rest, test) if test is not None else tuple(rest)
        return Split(train=train, test=held)

    if test is not None:
        held = evenly_spaced(stems, test)
        pool = [s for s in stems if s not in set(held)]
    else:
        held = None
        pool = stems
    if train_images < 1:
        raise PointsegError("--train-images must be at least 1")
    if len(pool) < train_images:
        raise PointsegError(
            f"{len(pool)} image(s) left for training but --train-images is {train_images}; lower --train-images or --test"
        )
    informative = [s for s in pool if len(present[s]) >= 2]
    candidates = informative if len(informative) >= train_images else pool
    rng = np.random.default_rng([seed, 1])
    picked = rng.choice(len(candidates), size=train_images, replace=False)
    train = tuple(candidates[i] for i in sorted(picked))
    if held is None:
        held = tuple(s for s in stems if s not in set(train))
    return Split(train=train, test=held)
