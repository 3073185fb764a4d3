"""hpi/retrieval/validation.py: what callers hand the feature index (features, labels, ids) is checked with errors
that say what was expected and name the bad item."""

from __future__ import annotations

import numpy as np
import pytest

from hpi.errors import InvalidInputError
from hpi.retrieval.validation import as_ids, as_labels, as_matrix, is_int


def test_is_int_takes_python_and_numpy_integers_but_not_bools_or_floats():
    assert is_int(3) and is_int(np.int64(3)) and is_int(np.uint8(3))
    assert not is_int(True) and not is_int(np.float32(3)) and not is_int(3.0) and not is_int("3")


# ------------------------------------------------------------------------------------------------- matrices


def test_a_matrix_becomes_contiguous_float32():
    data = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # float64, not contiguous
    out = as_matrix(data, dim=2, what="features")
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (3, 2)
    np.testing.assert_array_equal(out, data)
    np.testing.assert_array_equal(as_matrix([[1, 2], [3, 4]], dim=None, what="features"), [[1, 2], [3, 4]])


def test_a_vector_is_one_row_only_where_allowed():
    assert as_matrix([1.0, 2.0, 3.0], dim=3, what="queries", allow_vector=True).shape == (1, 3)
    with pytest.raises(InvalidInputError, match=r"features must be a 2-D array \[N, D\] with D >= 1, got shape \(3,\)"):
        as_matrix([1.0, 2.0, 3.0], dim=3, what="features")


@pytest.mark.parametrize(
    ("data", "allow_vector", "message"),
    [
        (np.zeros((2, 3, 4)), False, r"features must be a 2-D array \[N, D\] with D >= 1, got shape \(2, 3, 4\)"),
        (np.zeros((5, 0)), False, r"got shape \(5, 0\)"),
        (np.zeros((2, 3, 4)), True, r"features must be a 2-D array \[N, D\] or \[D\] with D >= 1"),
        (5.0, True, r"got shape \(\)"),
    ],
)
def test_wrong_shapes_are_refused_saying_what_was_expected(data, allow_vector, message):
    with pytest.raises(InvalidInputError, match=message):
        as_matrix(data, dim=None, what="features", allow_vector=allow_vector)


def test_a_dimension_other_than_the_index_is_refused():
    with pytest.raises(InvalidInputError, match="queries have dimension 3, the index has dimension 4"):
        as_matrix(np.zeros((2, 3)), dim=4, what="queries")


@pytest.mark.parametrize("data", [[["a", "b"]], [[1, 2], [3]], {"x": 1}])
def test_non_numeric_data_is_refused_naming_its_type(data):
    with pytest.raises(InvalidInputError, match=rf"features must be a numeric array \[N, D\], got {type(data).__name__}"):
        as_matrix(data, dim=None, what="features")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_row_is_named(bad):
    data = np.ones((5, 3), np.float32)
    data[3, 1] = bad
    data[4, 0] = bad
    with pytest.raises(InvalidInputError, match="features row 3 contains NaN or infinity"):
        as_matrix(data, dim=3, what="features")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_values_beyond_float32_are_refused_as_infinite():
    with pytest.raises(InvalidInputError, match="row 1 contains NaN or infinity"):
        as_matrix(np.array([[1.0], [1e300]]), dim=1, what="features")


def test_a_missing_value_is_a_nan_row():
    with pytest.raises(InvalidInputError, match="features row 1 contains NaN or infinity"):
        as_matrix([[1.0, 2.0], [None, 1.0]], dim=2, what="features")


# --------------------------------------------------------------------------------------------------- labels


def test_labels_one_per_row():
    assert as_labels(("a", "b"), 2) == ["a", "b"]
    assert as_labels(np.array(["x", "y"]), 2) == ["x", "y"]  # numpy strings become plain str
    assert all(type(label) is str for label in as_labels(np.array(["x", "y"]), 2))


def test_a_single_string_is_not_a_label_sequence():
    with pytest.raises(InvalidInputError, match="labels must be a sequence of strings, one per feature row, not a "
                                                "single string"):
        as_labels("ab", 2)


def test_a_label_count_other_than_the_rows_is_refused():
    with pytest.raises(InvalidInputError, match="got 1 labels for 2 feature rows"):
        as_labels(["a"], 2)


@pytest.mark.parametrize(("labels", "message"), [(["a", ""], r"label 1 must be a non-empty string, got ''"),
                                                 (["a", "b", 3], r"label 2 must be a non-empty string, got 3"),
                                                 ([None], r"label 0 must be a non-empty string, got None")])
def test_a_bad_label_is_named_by_position(labels, message):
    with pytest.raises(InvalidInputError, match=message):
        as_labels(labels, len(labels))


# ------------------------------------------------------------------------------------------------------ ids


def test_ids_keep_their_first_order_without_duplicates():
    assert as_ids([5, np.int64(3), 5, 1, 3]) == [5, 3, 1]
    assert as_ids(np.array([2, 2, 7], dtype=np.int32)) == [2, 7]
    assert as_ids(i for i in (4, 9)) == [4, 9]  # any iterable
    assert all(type(i) is int for i in as_ids(np.array([1, 2])))
    assert as_ids([]) == []


@pytest.mark.parametrize("ids", ["12", b"12", 12, np.int64(12)])
def test_a_single_id_or_a_string_is_not_a_sequence_of_ids(ids):
    with pytest.raises(InvalidInputError, match="ids must be a sequence of integers, got"):
        as_ids(ids)


@pytest.mark.parametrize(("ids", "bad"), [([1, True], "True"), ([1, 2.0], "2.0"), ([1, "3"], "'3'")])
def test_a_non_integer_id_is_named(ids, bad):
    with pytest.raises(InvalidInputError, match=f"ids must be integers, got {bad}"):
        as_ids(ids)
