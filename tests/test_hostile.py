"""Property-based hostile inputs (hypothesis): annotation JSON, feature arrays and results files.

Every case ends in the library's own error type with a message naming the input, or is accepted as valid
data; never a traceback from inside numpy / torch / Lightning, never a number computed on data that should have
been rejected.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tal.data import TALDataModule
from tal.eval.__main__ import main as eval_main
from tal.formats import AnnotationError, FeatureError, ResultsError, load_annotations, load_results

# derandomize: the same 150 examples on every machine, so a failure reproduces (and CI cannot flake)
SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.sampled_from([0, -1, 1e308, 5.0, 12.5]),
)
JUNK = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=3), st.just({})
)
GOOD = st.floats(0.5, 100.0)
MAYBE_NUMBER = st.one_of(GOOD, GOOD, GOOD, GOOD, NUMBERS, JUNK)  # mostly valid, so both paths are explored

ANNOTATION = st.fixed_dictionaries(
    {},
    optional={
        "segment": st.one_of(
            *[st.lists(MAYBE_NUMBER, min_size=2, max_size=2)] * 4, st.lists(MAYBE_NUMBER), JUNK
        ),
        "label": st.one_of(*[st.sampled_from(["run", "jump"])] * 4, st.just(""), JUNK, st.integers(0, 5)),
        "label_id": st.one_of(st.integers(0, 3), JUNK),
    },
)
VIDEO = st.fixed_dictionaries(
    {},
    optional={
        "subset": st.sampled_from(["training", "validation"]),
        "duration": MAYBE_NUMBER,
        "fps": MAYBE_NUMBER,
        "annotations": st.one_of(st.lists(ANNOTATION, max_size=4), JUNK),
    },
)
WELL_FORMED_VIDEO = st.fixed_dictionaries(
    {
        "subset": st.sampled_from(["training", "validation"]),
        "duration": GOOD,
        "annotations": st.lists(
            st.fixed_dictionaries(
                {"segment": st.lists(GOOD, min_size=2, max_size=2), "label": st.sampled_from("ab")}
            ),
            max_size=3,
        ),
    }
)
DATABASE = st.dictionaries(
    st.text(min_size=1, max_size=6), st.one_of(WELL_FORMED_VIDEO, WELL_FORMED_VIDEO, VIDEO, JUNK), max_size=3
)


@SETTINGS
@given(DATABASE)
def test_annotation_files(database):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps({"database": database}))
        try:
            ann = load_annotations(path)
        except AnnotationError as e:
            assert str(path) in str(e)
            event("annotations: clear error")
            return
    event("annotations: accepted")
    for v in ann:  # accepted: only well-formed values
        assert math.isfinite(v.duration_sec) and v.duration_sec > 0
        assert np.isfinite(v.segments_sec).all() and v.segments_sec.shape == (len(v.labels), 2)
        assert all(isinstance(lab, str) and lab for lab in v.labels)


FEATURE_DTYPES = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.complex64, np.uint8]
)


@SETTINGS
@given(
    hnp.arrays(
        FEATURE_DTYPES,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_feature_arrays(x):
    """One hostile array among good ones: the datamodule stops with an error naming that video, or skips it
    (counted), or the array is usable and loads as finite float32 ``(T, C)``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "f").mkdir()
        width = x.shape[1] if x.ndim == 2 and x.shape[1] else 3
        database = {}
        for k in range(4):
            vid = f"v{k}"
            database[vid] = {
                "subset": "training" if k < 2 else "validation",
                "duration": 4.0,
                "fps": 30.0,
                "annotations": [{"label": "a", "segment": [1.0, 2.0]}],
            }
            np.save(root / "f" / f"{vid}.npy", x if k == 3 else np.ones((6, width), np.float32))
        (root / "gt.json").write_text(json.dumps({"database": database}))
        for mode in ("error", "skip"):
            dm = TALDataModule(str(root / "gt.json"), [str(root / "f")], on_bad_feature=mode, verbose=False)
            try:
                dm.setup("fit")
            except FeatureError as e:
                assert mode == "error" and "v3" in str(e)
                event("features: clear error before training")
                continue
            if "v3" in dm.skipped:
                assert mode == "skip" and dm.report["invalid feature file (skipped)"] == 1
                event("features: counted skip")
                continue
            try:
                loaded = dm.store.load("v3")
            except FeatureError as e:  # values are checked lazily in "error" mode
                assert mode == "error" and "v3" in str(e) and "NaN/Inf" in str(e)
                event("features: clear error when read (NaN/Inf)")
                continue
            event("features: accepted")
            assert loaded.dtype == np.float32 and loaded.ndim == 2 and np.isfinite(loaded).all()


ROW = st.fixed_dictionaries(
    {},
    optional={
        "segment": st.one_of(
            *[st.lists(MAYBE_NUMBER, min_size=2, max_size=2)] * 4, st.lists(MAYBE_NUMBER), JUNK
        ),
        "score": MAYBE_NUMBER,
        "label": st.one_of(st.sampled_from(["a", "b"]), JUNK),
    },
)
WELL_FORMED_ROW = st.fixed_dictionaries(
    {
        "segment": st.lists(GOOD, min_size=2, max_size=2),
        "score": st.floats(0, 1),
        "label": st.sampled_from("ab"),
    }
)
VIDEO_IDS = st.sampled_from(["v1", "v2", "x"])
WELL_FORMED_RESULTS = st.fixed_dictionaries(
    {"results": st.dictionaries(VIDEO_IDS, st.lists(WELL_FORMED_ROW, max_size=4))}
)
HOSTILE_RESULTS = st.fixed_dictionaries(
    {"results": st.one_of(st.dictionaries(VIDEO_IDS, st.lists(ROW, max_size=4)), JUNK)}
)
RESULTS = st.one_of(WELL_FORMED_RESULTS, WELL_FORMED_RESULTS, HOSTILE_RESULTS, HOSTILE_RESULTS, JUNK)
GT = {
    "database": {
        "v1": {
            "subset": "validation",
            "duration": 30.0,
            "annotations": [{"label": "a", "segment": [1.0, 5.0]}],
        },
        "v2": {
            "subset": "validation",
            "duration": 30.0,
            "annotations": [{"label": "b", "segment": [3.0, 9.0]}],
        },
    }
}


@SETTINGS
@given(RESULTS)
@example(  # ragged segments: numpy's own ValueError escaped once
    {
        "results": {
            "v1": [
                {"segment": [1.0, 1.0], "label": None, "score": None},
                {"segment": [], "label": None, "score": None},
            ]
        }
    }
)
def test_results_files_and_the_cli(data):
    with tempfile.TemporaryDirectory() as tmp:
        gt, pred = Path(tmp) / "gt.json", Path(tmp) / "pred.json"
        gt.write_text(json.dumps(GT))
        pred.write_text(json.dumps(data))
        try:
            preds = load_results(pred)
        except ResultsError as e:
            assert str(pred) in str(e)
            event("results: clear error")
        else:
            assert np.isfinite(preds.segments_sec).all() and np.isfinite(preds.scores).all()
            event("results: accepted")
        for args in ([], ["--proposals"], ["--protocol", "strict"]):
            code = eval_main([str(gt), str(pred), *args])
            assert code in (0, 2)
            event(f"cli: exit {code}")
