"""The exported graph of a model whose context stage sees an enlarged copy applies the same factor."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from pointseg.deploy.export import LABEL_AGREEMENT, PROBA_ATOL, export_model
from pointseg.engines import forced_engine


@pytest.mark.parametrize("factor", [2, 4])
def test_export_of_an_enlarged_context_equals_the_library_on_a_small_image(tmp_path, engine_cache, factor):
    import onnxruntime as ort

    from pointseg.segmenter import Segmenter
    from synthetic import points_from_truth, two_texture_image

    image, truth = two_texture_image(h=150, w=190)
    with forced_engine("torch"):
        seg = Segmenter("efficientnet_lite0_s32", ["a", "b", "c"], precision="fp32", cross_validate=False,
                        context_upscale=factor).fit([image], [points_from_truth(truth, 6)])
        seg.save(tmp_path / "m.pointseg")
        native = Segmenter("efficientnet_lite0_s32", ["a", "b", "c"], precision="fp32", cross_validate=False,
                           context_upscale=1).fit([image], [points_from_truth(truth, 6)])
    meta = export_model(tmp_path / "m.pointseg", tmp_path / "m.onnx", test_image=image)
    assert meta["export_check"]["passed"]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    other, _ = two_texture_image(h=121, w=203, seed=4)  # odd sizes: padding before the enlargement
    for img in (image, other):
        ref = seg.predict_full(img, probabilities=True)
        proba, labels = session.run(None, {"images": img[None]})
        assert (labels[0] == ref.labels).mean() >= LABEL_AGREEMENT
        assert np.abs(proba[0] - ref.probabilities).max() <= PROBA_ATOL
    # guards the test: the factor changes the probabilities by far more than the tolerance
    assert np.abs(native.predict_full(image, probabilities=True).probabilities
                  - seg.predict_full(image, probabilities=True).probabilities).max() > 10 * PROBA_ATOL
