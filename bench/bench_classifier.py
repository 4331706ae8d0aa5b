"""Classifier cost: fit time against number of points and classes, and predict time per megapixel.

    python bench/bench_classifier.py            # ~3 min on 2 cores

Fit: ``Segmenter.fit`` on one cached 1024×1024 feature map (default backbone) with N points of K classes
(labels = nearest of K feature-space prototypes, so the problem looks like real clicks, not noise), next to
the torch L-BFGS alone (the solver used above 4,000 points x classes) and scikit-learn's ``LogisticRegression`` (lbfgs, same C, balanced) on the same standardised features - the
obvious implementation, as the baseline - and the core's random forest. Best of --repeat interleaved runs
(load from other jobs only adds time).

Predict: ``Segmenter.predict`` of a 1-megapixel image whose features are cached (the click → new map loop),
logistic vs random-forest head, next to the cost of extracting those features and to scikit-image's
``predict_segmenter`` on its filter features (the anchor).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from _common import header, md_table, save_md, test_image, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", default="100,300,1000,3000,10000")
    ap.add_argument("--classes", default="2,4,8")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    n_points = [int(v) for v in args.points.split(",")]
    n_classes = [int(v) for v in args.classes.split(",")]

    from sklearn.linear_model import LogisticRegression

    from pointseg import FeatureCache, Segmenter
    from pointseg.classifier import DEFAULT_C, SKLEARN_MAX_SIZE, PointClassifier, Standardizer, fit_multinomial_logistic
    from pointseg.segmenter import _point_features   # the exact feature rows fit() trains on

    img = test_image(args.size, args.size)
    mp = img.shape[0] * img.shape[1] / 1e6
    cache = FeatureCache()
    probe = Segmenter(classes=["a", "b"], cache=cache, cross_validate=False)
    # a cache that keeps nothing, so every call extracts: the deep map and, for hybrid, the fine filters
    nocache = Segmenter(classes=["a", "b"], cache=FeatureCache(max_bytes=0), cross_validate=False)
    extract_s = timed(lambda: nocache.extract_features(img), repeat=args.repeat, best=True)
    fmap = probe.extract_features(img)
    standardizer = Standardizer.from_moments([fmap.moments()])
    rng = np.random.default_rng(0)
    h, w = img.shape[:2]
    C = DEFAULT_C

    rows = []
    for k in n_classes:
        for n in n_points:
            xy = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], axis=1)
            feats = _point_features(fmap, xy)
            protos = feats[rng.choice(n, size=k, replace=False)]
            labels = np.argmin(((feats[:, None, :] - protos[None]) ** 2).sum(-1), axis=1)
            labels[:k] = np.arange(k)                       # every class has points
            pts = np.column_stack([xy, labels]).astype(np.float64)
            names = [f"c{i}" for i in range(k)]
            lr = Segmenter(classes=names, cache=cache, cross_validate=False)
            rf = Segmenter(classes=names, cache=cache, cross_validate=False, classifier="random_forest")
            rf_fmap = rf.extract_features(img)                   # the forest works on the deep features
            clf = PointClassifier("logistic", C)
            Xs = standardizer.transform(feats)
            sk = LogisticRegression(C=C, class_weight="balanced", max_iter=300, tol=1e-4)
            # interleaved, so load on the shared machine hits all three alike
            torch_only = lambda: fit_multinomial_logistic(Xs, labels, np.arange(k), C, "balanced", solver="torch")
            t = {"seg": [], "clf": [], "torch": [], "sk": []}
            lr.fit([fmap], [pts]), clf.fit(feats, labels, k, standardizer), sk.fit(Xs, labels)    # warm-up
            torch_only()
            for _ in range(args.repeat):
                t["seg"].append(timed(lambda: lr.fit([fmap], [pts]), repeat=1, warmup=0))
                t["clf"].append(timed(lambda: clf.fit(feats, labels, k, standardizer), repeat=1, warmup=0))
                t["torch"].append(timed(torch_only, repeat=1, warmup=0))
                t["sk"].append(timed(lambda: sk.fit(Xs, labels), repeat=1, warmup=0))
            t_lr, t_clf, t_torch, t_sk = (min(t[x]) for x in ("seg", "clf", "torch", "sk"))
            t_rf = timed(lambda: rf.fit([rf_fmap], [pts]), repeat=1, warmup=0)
            agree = _agreement(lr, sk, standardizer, fmap)
            solver = "sklearn" if n * k <= SKLEARN_MAX_SIZE else "torch"
            rows.append([k, n, f"{1000 * t_lr:.1f}", f"{1000 * t_clf:.1f} ({solver})", f"{1000 * t_torch:.1f}",
                         f"{t_clf / t_torch:.2f}×", f"{1000 * t_sk:.1f}", f"{1000 * t_rf:.0f}", f"{agree:.3f}"])
            print(rows[-1], flush=True)

    # predict per megapixel with cached features
    pts = np.array([[0.1, 0.1, 0], [0.9, 0.9, 1], [0.5, 0.2, 0], [0.3, 0.8, 1]]) * [w - 1, h - 1, 1]
    pts = np.round(pts)
    lr = Segmenter(classes=["a", "b"], cache=cache, cross_validate=False).fit([img], [pts])
    rf = Segmenter(classes=["a", "b"], cache=cache, cross_validate=False, classifier="random_forest").fit([img], [pts])
    t_pred = timed(lambda: lr.predict(img), repeat=args.repeat, best=True)
    t_full = timed(lambda: lr.predict_full(img, probabilities=True), repeat=args.repeat, best=True)
    t_rf = timed(lambda: rf.predict(img), repeat=args.repeat, best=True)
    t_skimage, t_skfeat = skimage_predict(img, pts, args.repeat)
    prow = [
        ["logistic, labels (`predict`)", f"{1000 * t_pred / mp:.0f}", "1.00×"],
        ["logistic, labels + probabilities (`predict_full`)", f"{1000 * t_full / mp:.0f}", f"{t_full / t_pred:.2f}×"],
        ["random forest head, labels", f"{1000 * t_rf / mp:.0f}", f"{t_rf / t_pred:.2f}×"],
        [f"feature extraction, default configuration ({probe.backbone}, '{probe.features_}'), for scale", f"{1000 * extract_s / mp:.0f}", f"{extract_s / t_pred:.2f}×"],
        ["skimage-rf `predict_segmenter` (anchor, features cached)", f"{1000 * t_skimage / mp:.0f}", f"{t_skimage / t_pred:.2f}×"],
        ["skimage-rf `multiscale_basic_features` (anchor's features)", f"{1000 * t_skfeat / mp:.0f}", f"{t_skfeat / t_pred:.2f}×"],
    ]
    for r in prow:
        print(r, flush=True)
    text = "\n".join([
        header("bench_classifier.py", sys.argv[1:]), "",
        f"#### Fit time (ms, best of {args.repeat}), default configuration ({probe.backbone}, features "
        f"'{probe.features_}', {feats.shape[1]} feature channels), C = {C}\n",
        md_table(["classes", "points", "`Segmenter.fit` (all of it)", "its logistic solver alone (chosen by size)",
                  "torch L-BFGS alone", "chosen / torch", "sklearn LogisticRegression out of the box",
                  "random forest (`classifier='random_forest'`)",
                  "label agreement pointseg vs sklearn (16k pixels)"], rows),
        f"\n#### Predict, {args.size}×{args.size} image ({mp:.2f} MP), features cached (best of {args.repeat})\n",
        md_table(["what", "ms/MP", "relative to logistic predict"], prow), ""])
    print(text)
    print(f"saved {save_md('classifier', text)}")


def _agreement(lr, sk, standardizer, fmap) -> float:
    """Share of ~16k pixels (a regular grid) where pointseg's logistic head and sklearn's model agree."""
    from pointseg.classifier import head_scores
    from pointseg.segmenter import _point_features

    h, w = fmap.image_size
    ys, xs = np.meshgrid(np.linspace(0, h - 1, 128), np.linspace(0, w - 1, 128), indexing="ij")
    X = _point_features(fmap, np.column_stack([xs.ravel(), ys.ravel()]))
    ours = head_scores(lr.head_, X).argmax(axis=1)
    theirs = sk.predict(standardizer.transform(X))
    return float((ours == theirs).mean())


def skimage_predict(img, pts, repeat):
    from pointseg.evaluation.anchors import SkimageRF, filter_features

    m = SkimageRF(["a", "b"])
    t_feat = timed(lambda: filter_features(img), repeat=1, warmup=0)
    m.fit([img], [pts.astype(np.int64)], ["img"])
    t = timed(lambda: m.predict(img, "img"), repeat=repeat, best=True)
    return t, t_feat


if __name__ == "__main__":
    main()
