"""Hypothesis strategies shared by the loader fuzz tests: JSON values and edits of a JSON document.

Every test here runs a fixed, small number of examples derandomised (the same examples on every run, no
example database), so CI time stays small and a failure reproduces exactly.
"""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pointseg.errors import PointsegError



def fuzz(examples: int):
    """Bounded and reproducible: ``examples`` cases, the same on every machine and every run."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from([0, -1, 1, 1e9, 1e300, -0.0, "", "#zzzzzz", "#00ff00", "deep", "hybrid", "logistic"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


def paths(node, prefix=()):
    """Every location in a JSON document, as tuples of keys and indices (the root excluded)."""
    out = []
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(paths(child, prefix + (key,)))
    return out


def edit(document, path, action: str, value=None):
    """A deep copy of ``document`` with the value at ``path`` replaced, deleted, or wrapped in a list."""
    doc = copy.deepcopy(document)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "wrap":
        parent[last] = [parent[last]]
    else:
        parent[last] = value
    return doc


def document_edits(document, max_edits: int = 3):
    """A strategy of edited copies of ``document``: 1..max_edits replacements, deletions or wraps."""
    locations = paths(document)

    @st.composite
    def edited(draw):
        doc = document
        for _ in range(draw(st.integers(1, max_edits))):
            here = paths(doc) or locations
            path = draw(st.sampled_from(here))
            action = draw(st.sampled_from(["replace", "replace", "delete", "wrap"]))
            doc = edit(doc, path, action, draw(json_values) if action == "replace" else None)
        return doc
    return edited()


def byte_damage(data: bytes):
    """A strategy of damaged copies of ``data``: flipped bits, truncation, inserted or deleted bytes."""
    @st.composite
    def damaged(draw):
        out = bytearray(data)
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete"]))
        if kind == "flip":
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(0, len(out) - 1))
                out[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del out[draw(st.integers(0, len(out) - 1)):]
        elif kind == "insert":
            i = draw(st.integers(0, len(out)))
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            i = draw(st.integers(0, len(out) - 1))
            del out[i: i + draw(st.integers(1, 16))]
        return bytes(out)
    return damaged()


def only_pointseg_errors(action):
    """Run ``action``; a PointsegError is a fine outcome, any other exception fails the test."""
    try:
        return action()
    except PointsegError:
        return None
