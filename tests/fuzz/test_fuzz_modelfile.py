"""Property: any damaged or edited model file gives a working Segmenter or a PointsegError, nothing else.

Edits of the metadata and the tensors are resealed (their checksum recomputed), as a hand edit or another
tool would, so that the field and tensor checks behind the checksum are what is fuzzed; byte damage is not
resealed, so it tests the container and the checksum. A file that loads must also predict.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pointseg import FeatureCache, Segmenter
from pointseg.modelfile import read_metadata

from modelkit import read_raw, train_small_model, write_raw
from mutations import fuzz, byte_damage, document_edits, only_pointseg_errors

IMAGE = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
CACHE = FeatureCache(max_bytes=0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = train_small_model(tmp_path_factory.mktemp("fuzz_model") / "m.pointseg")
    return path, read_raw(path)


def load_and_predict(path) -> None:
    read_metadata(path)
    seg = Segmenter.load(path, cache=CACHE)
    labels = seg.predict(IMAGE)
    assert labels.shape == IMAGE.shape[:2] and 0 <= labels.min() and labels.max() < len(seg.classes_)


def test_the_valid_file_loads_and_predicts(model):
    load_and_predict(model[0])


@pytest.fixture(scope="module")
def model_bytes(model):
    return model[0].read_bytes()


@fuzz(100)
@given(data=st.data())
def test_damaged_bytes(tmp_path_factory, model_bytes, data):
    path = tmp_path_factory.mktemp("bytes") / "m.pointseg"
    path.write_bytes(data.draw(byte_damage(model_bytes)))
    only_pointseg_errors(lambda: load_and_predict(path))


@fuzz(40)
@given(data=st.data())
def test_edited_metadata(tmp_path_factory, model, data):
    meta, tensors = model[1]
    edited = data.draw(document_edits(meta))
    path = write_raw(tmp_path_factory.mktemp("meta") / "m.pointseg", edited, tensors)
    only_pointseg_errors(lambda: load_and_predict(path))


special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e-30, 1e30])


@st.composite
def tensor_edits(draw, tensors):
    out = {k: v.copy() for k, v in tensors.items()}
    name = draw(st.sampled_from(sorted(out)))
    kind = draw(st.sampled_from(["value", "value", "shape", "dtype", "drop"]))
    if kind == "value":
        flat = out[name].reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(special)
    elif kind == "shape":
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
        out[name] = np.ones(shape, np.float32)
    elif kind == "dtype":
        out[name] = out[name].astype(draw(st.sampled_from([np.float16, np.float64, np.int32, np.uint8])))
    else:
        del out[name]
    return out


@fuzz(20)
@given(data=st.data())
def test_edited_tensors(tmp_path_factory, model, data):
    meta, tensors = model[1]
    edited = data.draw(tensor_edits(tensors))
    path = write_raw(tmp_path_factory.mktemp("tensors") / "m.pointseg", copy.deepcopy(meta), edited)
    only_pointseg_errors(lambda: load_and_predict(path))
