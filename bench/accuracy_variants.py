"""Exploratory accuracy variants: the numbers of the "Accuracy work (issue 5)" table in BENCHMARKS.md.

    python bench/accuracy_variants.py DATASET SPEC SEEDS VARIANT
    python bench/accuracy_variants.py kolektorsdd default 0,1,2,3,4,5 none          # the reference row
    python bench/accuracy_variants.py kolektorsdd efficientnet_lite0 0,1,2,3,4,5 none   # previous default

Runs the harness's corrective protocol (10 clicks on each of 3 training images per seed, the same splits and
clicks as `pointseg evaluate`), optionally changes one thing, and prints the defect IoU on the 10 held-out
images (confusion pooled over seeds) and on the clicked images. An idea is tried here before it becomes a
Segmenter option: VARIANT monkeypatches the library (the filter bank, the feature maps, the standardiser or
fit), so nothing here is a supported API. Variants (join several with "+"): none; inorm_all / inorm_fine /
icenter_*: per-image standardisation or centring; dog_rgb / dog_rgb8 / dog_lcn: brightness-invariant filters;
pseudo / pseudo95: self-training; up2: the network on the image upscaled 2x; guided_R_EPS: guided-filter
upsampling of the deep scores; ms05: a second, half-resolution pass; augj / augf: training-time jitter or
mirror; bwA: the filter block times A after standardisation; cpadP: reflect P px around the image before
the network; cwA: the stride-32 context block times A. (The stride-32 rows were measured with a variant that is now the default backbone.)

Stale since the prediction path moved to ``features.Scores`` (2026-12-01): guided_* and ms* patch
``Segmenter._finish`` / ``_fine_scores`` / ``segmenter.upsample``, which no longer exist or take other
arguments; port them to ``FeatureMap.score`` / ``Scores`` before measuring them again.
"""
import sys, numpy as np, os
from pathlib import Path
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))
import pointseg.features as F
from pointseg import FeatureCache
from pointseg.evaluation.datasets import load_dataset, choose_split
from pointseg.evaluation.methods import build_method
from pointseg.evaluation.runner import EvalConfig, ImageStore, _Driver, _Timer, run_corrective
from pointseg.evaluation.metrics import confusion_matrix, iou_per_class

ds_name, spec, seeds, variant = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4]
ntest = 10
if variant.startswith("inorm") or variant.startswith("icenter"):
    orig = F.FeatureExtractor.extract
    def extract(self, image):
        fm = orig(self, image)
        if getattr(fm, "_normed", False): return fm
        def norm(a, valid=None):
            v = a if valid is None else a[:, :valid[0], :valid[1]]
            flat = v.reshape(v.shape[0], -1)
            mu = flat.mean(1, dtype=np.float64); sd = flat.std(1, dtype=np.float64); sd[sd < 1e-6] = 1
            if variant.startswith("icenter"): sd[:] = 1
            return ((a - mu[:, None, None]) / sd[:, None, None]).astype(np.float32)
        if variant.endswith("_all"):
            fm.data = norm(fm.data, fm.valid_grid_size)
        if fm.fine is not None:
            fm.fine = norm(fm.fine)
        fm._stats = None; fm._normed = True
        return fm
    F.FeatureExtractor.extract = extract
if variant.startswith("dog"):
    import pointseg.filters as FL
    from scipy import ndimage as ndi
    base = FL.low_level_features
    def llf(rgb):
        out = base(rgb)
        grey = out[:3].mean(axis=0)
        S = 8.0 if variant == "dog_rgb8" else 16.0
        local = ndi.gaussian_filter(grey, S, mode="reflect", truncate=4.0)
        for k in range(len(FL.SIGMAS)):
            out[3 + k * len(FL.PER_SIGMA)] -= local
        if variant in ("dog_rgb", "dog_rgb8", "dog_lcn"):
            for c in range(3):
                out[c] -= ndi.gaussian_filter(out[c], S, mode="reflect", truncate=4.0)
        if variant == "dog_lcn":
            var = ndi.gaussian_filter(grey * grey, S, mode="reflect", truncate=4.0) - local * local
            sd = np.sqrt(np.maximum(var, 0)) + 0.03
            out /= sd[None]
        return out
    FL.low_level_features = llf

if variant.startswith("up"):
    import torch, torch.nn.functional as TF
    fac = float(variant[2:].split("_")[0])
    maxpx = float(variant.split("_")[1]) if "_" in variant else 1e12
    origx = F.FeatureExtractor.extract
    def extract_up(self, image):
        from pointseg.imageio import load_image
        if isinstance(image, F.FeatureMap): return origx(self, image)
        rgb = load_image(image); h, w = rgb.shape[:2]
        if h * w > maxpx: return origx(self, rgb)
        key = self.key_for(rgb) + "-up"
        c = self.cache.get(key)
        if c is not None: return c
        H, W = int(round(h * fac)), int(round(w * fac))
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        up = TF.interpolate(t, size=(H, W), mode="bilinear", align_corners=False, antialias=False)
        up = up.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        data = self.compute(up)
        hp, wp = self.padded_size((H, W))
        ext = (int(hp * h / H), int(wp * w / W))
        from pointseg.filters import low_level_features
        fine = low_level_features(rgb) if self.hybrid else None
        fm = F.FeatureMap(data, (h, w), ext, key, self.id, fine)
        self.cache.put(fm)
        return fm
    F.FeatureExtractor.extract = extract_up
if variant.startswith("guided"):
    import torch
    import pointseg.segmenter as SG
    from scipy.ndimage import uniform_filter
    parts = variant.split("_")
    R = int(parts[1]) if len(parts) > 1 else 4
    EPS = float(parts[2]) if len(parts) > 2 else 1e-3
    SG.Segmenter.predict = lambda self, image: self.predict_full(image, probabilities=True).labels
    orig_fin = SG.Segmenter._finish
    def fin(self, decision, probabilities):
        rgb = decision.rgb
        self._guide = None
        return orig_fin(self, decision, probabilities)
    orig_dg = SG.Segmenter.decision_grid
    def dg(self, image):
        from pointseg.imageio import load_image
        d = orig_dg(self, image)
        if not isinstance(image, F.FeatureMap):
            g = load_image(image).astype(np.float32).mean(axis=2) / 255.0
            SG._GUIDE = g
        return d
    SG.Segmenter.decision_grid = dg
    def gf(I, p, r, eps):
        size = 2 * r + 1
        mI = uniform_filter(I, size, mode="reflect"); mp = uniform_filter(p, size, mode="reflect")
        cov = uniform_filter(I * p, size, mode="reflect") - mI * mp
        var = uniform_filter(I * I, size, mode="reflect") - mI * mI
        a = cov / (var + eps); b = mp - a * mI
        return uniform_filter(a, size, mode="reflect") * I + uniform_filter(b, size, mode="reflect")
    def up_g(grid, extent, image_size):
        out = F.upsample(grid, extent, image_size)
        g = SG._GUIDE
        if g is None or g.shape != tuple(out.shape[1:]): return out
        arr = out.numpy().copy()
        base = arr[0].copy()
        for k in range(arr.shape[0]):
            arr[k] = gf(g, arr[k] - base, R, EPS) + base
        return torch.from_numpy(arr)
    SG._GUIDE = None
    SG.upsample = up_g

if any(t.startswith("ms") for t in variant.split("+")):
    import torch, torch.nn.functional as TF
    import pointseg.segmenter as SG
    fac = float("0." + variant[3:]) if len(variant) > 3 else 0.5
    origx = F.FeatureExtractor.extract
    def extract_ms(self, image):
        from pointseg.imageio import load_image
        if isinstance(image, F.FeatureMap): return origx(self, image)
        rgb = load_image(image); h, w = rgb.shape[:2]
        key = self.key_for(rgb)
        c = self.cache.get(key)
        if c is not None and c.data.shape[0] > self.channels: return c
        fm = origx(self, rgb)
        h2, w2 = max(32, int(round(h * fac))), max(32, int(round(w * fac)))
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        dn = TF.interpolate(t, size=(h2, w2), mode="bilinear", align_corners=False, antialias=True)
        dn = dn.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        d2 = torch.from_numpy(self.compute(dn))[None]
        s = 1.0 / fac
        hf, wf = fm.data.shape[1:]
        # map original cell centres (j+.5)*4 px -> down-grid coords ((j+.5)*4*fac/4 - .5)
        ys = ((torch.arange(hf) + 0.5) * 4 * (h2 / h) / 4 - 0.5)
        xs = ((torch.arange(wf) + 0.5) * 4 * (w2 / w) / 4 - 0.5)
        gy = (ys + 0.5) / d2.shape[2] * 2 - 1; gx = (xs + 0.5) / d2.shape[3] * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
        up = TF.grid_sample(d2, grid, mode="bilinear", padding_mode="border", align_corners=False)[0].numpy()
        fm2 = F.FeatureMap(np.concatenate([fm.data, up.astype(np.float32)]), fm.image_size, fm.extent, key, self.id, fm.fine)
        self.cache._memory.pop(key)
        self.cache.put(fm2)
        return fm2
    F.FeatureExtractor.extract = extract_ms
    def fine_scores(self, decision, r0, r1):
        if not self.extractor.hybrid: return None
        fine = decision.fine[:, r0:r1]
        w, _ = self.head_.folded()
        nf = fine.shape[0]
        w_fine = torch.from_numpy(np.ascontiguousarray(w[:, w.shape[1] - nf:]))
        c, hh, ww = fine.shape
        return (w_fine @ torch.from_numpy(np.ascontiguousarray(fine)).reshape(c, -1)).reshape(-1, hh, ww)
    SG.Segmenter._fine_scores = fine_scores
if variant.startswith("aug"):
    import pointseg.segmenter as SG
    from pointseg.imageio import load_image
    orig_fit = SG.Segmenter.fit
    def jit(img, g, o):
        f = img.astype(np.float32); m = f.mean()
        return np.clip((f - m) * g + m + o, 0, 255).astype(np.uint8)
    def fit_aug(self, images, points, scribbles=None):
        imgs, pts = [], []
        for im, p in zip(images, points):
            a = load_image(im) if not isinstance(im, F.FeatureMap) else im
            imgs.append(a); pts.append(p)
            if isinstance(a, F.FeatureMap) or p is None or len(p) == 0: continue
            p = np.asarray(p, float)
            if "j" in variant:
                for g, o in ((0.8, 15), (1.25, -15)):
                    imgs.append(jit(a, g, o)); pts.append(p)
            if "f" in variant:
                h, w = a.shape[:2]
                q = p.copy(); q[:, 0] = w - 1 - q[:, 0]
                imgs.append(np.ascontiguousarray(a[:, ::-1])); pts.append(q)
        return orig_fit(self, imgs, pts, scribbles)
    SG.Segmenter.fit = fit_aug

_bw = next((t for t in variant.split("+") if t.startswith("bw")), None)
if _bw:
    import pointseg.classifier as CL, pointseg.segmenter as SG
    import pointseg.filters as FL
    alpha = float(_bw[2:])
    _orig_fm = CL.Standardizer.from_moments.__func__
    def fm_(cls, moments):
        st = _orig_fm(cls, moments)
        st.scale = st.scale.copy(); st.scale[-FL.CHANNELS:] /= alpha
        return st
    CL.Standardizer.from_moments = classmethod(fm_)
    SG.Standardizer = CL.Standardizer

_cp = next((t for t in variant.split("+") if t.startswith("cpad")), None)
if _cp:
    P = int(_cp[4:])
    origc = F.FeatureExtractor.compute
    def compute_pad(self, rgb):
        h, w = rgb.shape[:2]
        mode = "reflect" if min(h, w) > P else "symmetric"
        big = np.pad(rgb, ((P, P), (P, P), (0, 0)), mode=mode)
        out = origc(self, big)
        hp, wp = self.padded_size((h, w))
        c = P // 4
        return np.ascontiguousarray(out[:, c: c + hp // 4, c: c + wp // 4])
    F.FeatureExtractor.compute = compute_pad

_cw = next((t for t in variant.split("+") if t.startswith("cw")), None)
if _cw:  # the stride-32 context block times A after standardisation (A < 1: a stronger L2 penalty on it)
    import pointseg.classifier as CL2
    import pointseg.filters as FL2
    beta = float(_cw[2:])
    _orig_fm2 = CL2.Standardizer.from_moments.__func__
    def fm2_(cls, moments):
        st = _orig_fm2(cls, moments)
        n = st.scale.shape[0]
        fine = FL2.CHANNELS if n in (368 + FL2.CHANNELS, 176 + FL2.CHANNELS) else 0
        if n - fine == 368:
            st.scale = st.scale.copy(); st.scale[176:368] /= beta
        return st
    CL2.Standardizer.from_moments = classmethod(fm2_)
ds = load_dataset(SHARED / "datasets" / ds_name)
store = ImageStore(ds); cache = FeatureCache()
config = EvalConfig(protocols=("corrective",), seeds=tuple(seeds), train_images=3, test=ntest, budget=10, transfer_at=(10,))
K = ds.n_classes
m = build_method(spec, ds.classes, cache=cache)
seg = m.segmenter
tot = np.zeros((K, K)); inter = np.zeros((K, K))
for seed in seeds:
    split = choose_split(ds.stems, store.present, seed, 3, None, ntest)
    drv = _Driver(m, store, _Timer(), set())
    res = run_corrective(drv, split, seed, config, list(ds.classes))
    if variant.startswith("pseudo"):
        thr, nps = (0.8, 400) if variant == "pseudo" else (0.95, 150)
        rng = np.random.default_rng(seed)
        imgs, pts = [], []
        for s in split.train:
            img = store.image(s)
            clicks = np.asarray(res["per_image"][s]["clicks"], float)
            pr = seg.predict_full(img, probabilities=True)
            conf = 1 - pr.uncertainty
            ys, xs = np.nonzero(conf > thr)
            pick = rng.choice(len(ys), size=min(nps, len(ys)), replace=False)
            extra = np.stack([xs[pick], ys[pick], pr.labels[ys[pick], xs[pick]]], 1).astype(float)
            imgs.append(img); pts.append(np.vstack([clicks, extra]))
        seg.fit(imgs, pts)
    for s in split.train:
        inter += confusion_matrix(store.mask(s), seg.predict(store.image(s)), K)
    for s in split.test:
        tot += confusion_matrix(store.mask(s), seg.predict(store.image(s)), K)
iou = iou_per_class(tot); ii = iou_per_class(inter)
print(f"{ds_name:14s} {spec:40s} {variant:10s} transfer fgIoU {np.nanmean(iou[1:]):.3f}  mIoU {np.nanmean(iou):.3f} | interactive@10 fgIoU {np.nanmean(ii[1:]):.3f}")
