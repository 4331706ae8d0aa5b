"""Simulated-user evaluation of pointseg against the tools users would pick instead (``pointseg evaluate``).

Python use, the same code as the command::

    from pointseg import FeatureCache
    from pointseg.evaluation import EvalConfig, build_method, evaluate, load_dataset, print_tables

    ds = load_dataset("../shared/datasets/crackforest")
    cache = FeatureCache()
    methods = [build_method(m, ds.classes, cache=cache) for m in ("default", "seed", "skimage-rf")]
    results = evaluate(ds, methods, EvalConfig(seeds=(0, 1), test=10))
    print_tables(results)

Modules: ``datasets`` (folder layout, splits), ``protocols`` (random and corrective clicks), ``metrics`` (IoU,
NoC), ``methods`` / ``anchors`` (what is compared), ``runner`` (the loop), ``report`` (tables, JSON, CSV, plots),
``command`` (the typer command). Names are imported lazily so ``pointseg --help`` stays fast.
"""

_EXPORTS = {
    "load_dataset": "datasets",
    "SegmentationDataset": "datasets",
    "EvalConfig": "runner",
    "evaluate": "runner",
    "build_method": "methods",
    "Method": "methods",
    "print_tables": "report",
    "write_json": "report",
    "write_csv": "report",
    "plot_curves": "report",
    "markdown_tables": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
