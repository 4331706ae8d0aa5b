import json

import numpy as np
import pytest
from PIL import Image

from pointseg.errors import PointsegError
from pointseg.evaluation.datasets import IGNORE, choose_split, classes_present, evenly_spaced, load_dataset

from eval_helpers import make_dataset


def test_load_dataset_reads_classes_stems_and_ignore(synth):
    assert synth.classes == ("normal", "defect")
    assert synth.stems == tuple(f"im{i:02d}" for i in range(6))
    img, mask = synth.load_image("im00"), synth.load_mask("im00")
    assert img.shape == (40, 52, 3) and img.dtype == np.uint8
    assert mask.shape == (40, 52) and set(np.unique(mask)) == {0, 1, IGNORE}
    assert classes_present(mask, 2) == (0, 1)
    assert classes_present(synth.load_mask("im05"), 2) == (0,)


def test_meta_ignore_index_is_mapped_to_255(tmp_path):
    root = make_dataset(tmp_path / "d", n=2, ignore_band=False)
    (root / "meta.json").write_text(json.dumps({"ignore_index": 7}))
    m = np.zeros((40, 52), np.uint8)
    m[:3] = 7
    Image.fromarray(m).save(root / "masks" / "im00.png")
    mask = load_dataset(root).load_mask("im00")
    assert (mask[:3] == IGNORE).all() and (mask[3:] == 0).all()


def test_mask_value_outside_classes_is_a_clear_error(tmp_path):
    root = make_dataset(tmp_path / "d", n=2)
    m = np.zeros((40, 52), np.uint8)
    m[0, 0] = 5
    Image.fromarray(m).save(root / "masks" / "im01.png")
    with pytest.raises(PointsegError, match="value 5"):
        load_dataset(root).load_mask("im01")


def test_image_without_mask_and_missing_classes_json_are_errors(tmp_path):
    root = make_dataset(tmp_path / "d", n=2)
    (root / "masks" / "im01.png").unlink()
    with pytest.raises(PointsegError, match="no mask"):
        load_dataset(root)
    root2 = make_dataset(tmp_path / "e", n=2)
    (root2 / "classes.json").unlink()
    with pytest.raises(PointsegError, match="classes.json"):
        load_dataset(root2)


def test_evenly_spaced_includes_ends():
    assert evenly_spaced(list("abcdefghi"), 3) == ("a", "e", "i")
    assert evenly_spaced(list("abc"), 5) == ("a", "b", "c")


def test_split_is_deterministic_disjoint_and_prefers_two_class_images():
    stems = tuple(f"s{i:02d}" for i in range(20))
    present = {s: ((0, 1) if i % 2 else (0,)) for i, s in enumerate(stems)}
    a = choose_split(stems, present, seed=3, train_images=3, test=5)
    assert a == choose_split(stems, present, seed=3, train_images=3, test=5)
    others = [choose_split(stems, present, seed=s, train_images=3, test=5) for s in range(6)]
    assert len({o.train for o in others}) > 1                   # seeds change the training images ...
    assert len({o.test for o in others}) == 1                   # ... but not the held-out set
    assert a.test == evenly_spaced(stems, 5)
    for o in others:
        assert not set(o.train) & set(o.test)
        assert all(len(present[s]) == 2 for s in o.train)
    rest = choose_split(stems, present, seed=0, train_images=2)
    assert set(rest.test) == set(stems) - set(rest.train)


def test_named_training_stems(synth):
    present = {s: (0, 1) for s in synth.stems}
    sp = choose_split(synth.stems, present, seed=0, train_stems=["im03"], test=2)
    assert sp.train == ("im03",) and len(sp.test) == 2 and "im03" not in sp.test
    with pytest.raises(PointsegError, match="not in the dataset"):
        choose_split(synth.stems, present, seed=0, train_stems=["nope"])


def test_max_megapixels_downscales_image_and_mask_alike(synth_dir):
    ds = load_dataset(synth_dir, max_megapixels=0.0005)      # 40x52 = 0.00208 MP -> about half the side
    img, mask = ds.load_image("im01"), ds.load_mask("im01")
    assert img.shape[:2] == mask.shape and mask.shape[0] < 40
    assert set(np.unique(mask)) <= {0, 1}                     # nearest neighbour: no blended ids
