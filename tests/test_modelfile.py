"""The .pointseg file: checksum, field-by-field validation, one-line errors, old and newer files."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from pointseg import Segmenter
from pointseg.errors import ModelFileError
from pointseg.modelfile import CHECKSUM_KEY, FIELDS, read_metadata

from modelkit import read_raw, train_small_model, write_raw
from synthetic import two_texture_image


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_small_model(tmp_path_factory.mktemp("model") / "m.pointseg")


@pytest.fixture(scope="module")
def parts(model):
    return read_raw(model)


def edited(tmp_path, parts, meta_edit=None, tensor_edit=None, reseal=True, name="edited.pointseg"):
    meta, tensors = copy.deepcopy(parts[0]), {k: v.copy() for k, v in parts[1].items()}
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors)
    return write_raw(tmp_path / name, meta, tensors, reseal=reseal)


def one_line_error(path, match):
    with pytest.raises(ModelFileError, match=match) as info:
        read_metadata(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_saved_file_carries_a_checksum_and_round_trips(model, parts):
    meta, _ = parts
    assert meta["format_version"] == 2 and meta[CHECKSUM_KEY].startswith("sha256:")
    loaded = Segmenter.load(model)
    image, _ = two_texture_image(h=96, w=128)
    assert loaded.predict(image).shape == (96, 128)


def test_checksum_ignores_json_layout_but_not_content(tmp_path, model, parts):
    from safetensors.numpy import save

    meta, tensors = parts
    # the same metadata with other key order and whitespace still verifies
    relaid = json.dumps(dict(reversed(list(meta.items()))), indent=3)
    (tmp_path / "relaid.pointseg").write_bytes(save(tensors, metadata={"pointseg": relaid}))
    read_metadata(tmp_path / "relaid.pointseg")
    # a changed value without a new checksum does not
    path = edited(tmp_path, parts, lambda m: m["params"].update(smoothing=0.5), reseal=False)
    one_line_error(path, "checksum does not match")


def test_a_flipped_byte_in_the_header_or_the_tensors_is_refused(tmp_path, model):
    data = model.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = data[8: 8 + header_len]
    # a digit inside the metadata (a class colour or a number): still valid JSON, different meaning
    digit = 8 + header.index(b'preprocessing') + header[header.index(b'preprocessing'):].index(b"0.")
    for where in (digit + 3, 8 + header_len + 17, len(data) - 5):
        damaged = bytearray(data)
        damaged[where] ^= 0x01
        (tmp_path / "flip.pointseg").write_bytes(bytes(damaged))
        with pytest.raises(ModelFileError) as info:
            read_metadata(tmp_path / "flip.pointseg")
        assert "checksum" in str(info.value) or "not a pointseg model" in str(info.value)


def _set(path, value):
    def edit(meta):
        node = meta
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return edit


def _delete(path):
    def edit(meta):
        node = meta
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        del node[last]
    return edit


@pytest.mark.parametrize("edit, message", [
    (_delete("classes"), "classes is missing"),
    (_delete("weights_sha256"), "weights_sha256 is missing"),
    (_set("params", "fast"), "params is \"fast\", expected an object"),
    (_set("params.smoothing", -1), "params.smoothing is -1, expected a finite number >= 0"),
    (_set("params.smoothing", 1e300), "params.smoothing is 1e\\+300, expected a finite number >= 0 and <= 1000"),
    (_set("params.min_region", 2.5), "params.min_region is 2.5, expected an integer >= 0"),
    (_set("params.min_region", -1), "params.min_region is -1"),
    (_set("params.C", "abc"), "params.C"),
    (_set("params.tile_size", 0), "params.tile_size"),
    (_set("preprocessing.preprocessing_version", 99), "preprocessing version 99"),
    (_set("preprocessing.mean", [0.5, 0.5, 0.5]), "preprocessing.mean is .* normalises with"),
    (_set("preprocessing.std", [0.2, 0.0, 0.2]), "preprocessing.std"),
    (_set("colors", ["#00ff00", "#0000ff"]), "2 colours for 3 classes"),
    (_set("colors", ["green", "#0000ff", "#ff0000"]), "colors is a list of 3"),
    (_set("classes", ["a", "a", "b"]), "no repeats"),
    (_set("backbone", "resnet999"), "backbone is \"resnet999\", expected one of"),
    (_set("format_version", 4), "model format 4.*upgrade pointseg"),
    (_set("format_version", "2"), "model format \"2\""),
    (_set("feature_precision", "fp8"), "feature_precision"),
    (_set("training_report", "good"), "training_report"),
    (_set("training_report.point_accuracy", "high"), "training_report is an object, expected an object whose point_accuracy"),
    (_set("filter_bank_version", 99), "version 99 of the low-level filter bank"),
    (_set("background_class", 3), "background_class is 3, not a class index 0..2"),
    (_set("background_class", "0"), "background_class is \"0\", expected an integer >= 0"),
    (_set("ng_rule", {"score": "largest_region", "threshold": -5}), "ng_rule is an object, expected null or an object"),
    (_set("ng_rule", {"score": "vibes", "threshold": 1}), "ng_rule"),
    (_set("ng_rule", {"score": "largest_region", "threshold": 1, "n_ok": "many"}), "n_ok and n_ng integers"),
])
def test_each_bad_field_is_one_line_naming_it(tmp_path, parts, edit, message):
    text = one_line_error(edited(tmp_path, parts, edit), message)
    assert text.startswith("edited.pointseg") and ("retrain" in text or "upgrade" in text)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["coef"].__setitem__((0, 0), np.nan), "coef contains NaN"),
    (lambda t: t["intercept"].__setitem__(1, np.inf), "intercept contains NaN or infinite"),
    (lambda t: t.__setitem__("scale", np.zeros_like(t["scale"])), "scale has zero or negative"),
    (lambda t: t["scale"].__setitem__(3, -1.0), "scale has zero or negative"),
    (lambda t: t.__setitem__("intercept", np.zeros(2, np.float32)), r"intercept has shape \(2,\), expected \(3,\)"),
    (lambda t: t.__setitem__("mean", t["mean"][:-1].copy()), "mean has shape"),
    (lambda t: t.__setitem__("coef", t["coef"][:2].copy()), "coef has shape"),
    (lambda t: t.__setitem__("coef", t["coef"][:, :-1].copy()), "coef has .* channels, the metadata says"),
    (lambda t: t.pop("scale"), "lacks the tensors scale"),
    (lambda t: t.__setitem__("coef", t["coef"].astype(np.int32)), "coef has dtype int32"),
])
def test_bad_tensors_are_refused(tmp_path, parts, edit, message):
    one_line_error(edited(tmp_path, parts, tensor_edit=edit), message)


def test_unknown_keys_from_a_newer_pointseg_are_ignored_and_kept(tmp_path, parts):
    def newer(meta):
        meta["ng_rule_v9"] = {"threshold": 0.3}
        meta["params"]["future_knob"] = 7
        meta["training_report"]["per_fold"] = [0.9, 0.8]
    path = edited(tmp_path, parts, newer)
    seg = Segmenter.load(path)
    assert seg.model_metadata_["ng_rule_v9"] == {"threshold": 0.3}
    assert seg.training_report_.n_points == parts[0]["training_report"]["n_points"]


def test_format_1_files_without_checksum_still_load_and_are_still_validated(tmp_path, parts):
    def as_version_1(meta):
        meta["format_version"] = 1
        del meta[CHECKSUM_KEY]
        for key in ("pointseg_version", "feature_precision", "feature_channels", "filter_bank_version"):
            meta.pop(key)
        meta["params"].pop("min_region")
        meta["params"].pop("prior_correction")
    old = edited(tmp_path, parts, as_version_1, reseal=False, name="old.pointseg")
    seg = Segmenter.load(old)
    assert seg.min_region == 0 and seg.model_metadata_["format_version"] == 1
    image, _ = two_texture_image(h=96, w=128)
    assert seg.predict(image).shape == (96, 128)
    bad = edited(tmp_path, parts, lambda m: (as_version_1(m), m["params"].update(smoothing=-1)), reseal=False)
    one_line_error(bad, "params.smoothing is -1")


def test_a_version_2_file_must_have_its_fields_and_checksum(tmp_path, parts):
    one_line_error(edited(tmp_path, parts, _delete(CHECKSUM_KEY), reseal=False), "checksum is missing")
    one_line_error(edited(tmp_path, parts, _delete("feature_channels")), "feature_channels is missing")


def test_a_folder_or_an_oversized_file_is_refused_before_reading(tmp_path, model, monkeypatch):
    with pytest.raises(ModelFileError, match="is a folder, not a model file"):
        read_metadata(tmp_path)
    monkeypatch.setenv("POINTSEG_MAX_MODEL_MB", "0.001")
    with pytest.raises(ModelFileError, match="POINTSEG_MAX_MODEL_MB"):
        read_metadata(model)


def test_every_field_entry_has_a_valid_default_or_is_required():
    """Adding a field is one entry: a required one names the version, an optional one a valid default."""
    for spec in FIELDS:
        if spec.required is None:
            assert spec.check(spec.default) is None, spec.path
