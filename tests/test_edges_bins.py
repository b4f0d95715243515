"""The discretised logistic's ``to_data`` -> ``prepare`` round trip is exact in float32 for
every bin count the head accepts (issue 22, item 8)."""

import numpy as np
import pytest
import tensorflow as tf

from kvae.errors import ConfigError
from kvae.heads import DiscretizedLogistic
from kvae.heads.likelihoods import _bins_to_data, _data_to_bins

MAX = DiscretizedLogistic.MAX_BINS


def _round_trip(k, n):
    k = tf.constant(k, tf.float32)
    return _data_to_bins(_bins_to_data(k, n), n).numpy()


def test_every_bin_of_every_count_up_to_1500_round_trips():
    # All (n, k) with 2 <= n <= 1500 and 0 <= k < n: about 1.1 million bins in one call.
    n = np.repeat(np.arange(2, 1501), np.arange(2, 1501)).astype(np.float32)
    k = np.concatenate([np.arange(m) for m in range(2, 1501)]).astype(np.float32)
    back = _round_trip(k, tf.constant(n))
    wrong = np.flatnonzero(back != k)
    assert wrong.size == 0, [(int(n[i]), int(k[i]), back[i]) for i in wrong[:10]]


def test_edge_bins_of_every_count_the_head_accepts_round_trip():
    n = np.arange(2, MAX + 1, dtype=np.float32)
    for k in (np.zeros_like(n), np.ones_like(n), n - 2.0, n - 1.0, np.floor(n / 3)):
        back = _round_trip(k, tf.constant(n))
        wrong = np.flatnonzero(back != k)
        assert wrong.size == 0, [(int(n[i]), int(k[i]), back[i]) for i in wrong[:10]]


@pytest.mark.parametrize("num_bins", [100, 1000, 9973, MAX - 1, MAX])
def test_the_head_round_trips_every_bin(num_bins):
    head = DiscretizedLogistic((1,), num_bins=num_bins)
    k = np.arange(num_bins, dtype=np.float32)
    x = head.to_data(tf.constant(k))
    np.testing.assert_array_equal(head.prepare(x).numpy(), k)
    # The support (what kvae.testing sums probabilities over) holds each bin once.
    np.testing.assert_array_equal(head.prepare(head.support()).numpy(), k)


def test_8_bit_data_read_as_j_over_255_keeps_its_bins():
    head = DiscretizedLogistic((1,), num_bins=256)
    j = np.arange(256, dtype=np.float32)
    got = head.prepare(tf.constant(j / np.float32(255))).numpy()
    np.testing.assert_array_equal(got, np.minimum(j, 255))
    # Values outside [0, 1] clip to the edge bins.
    np.testing.assert_array_equal(head.prepare(tf.constant([-0.5, 1.5])).numpy(), [0, 255])


def test_more_bins_than_float32_can_tell_apart_are_refused():
    with pytest.raises(ConfigError, match="num_bins <= 65536"):
        DiscretizedLogistic((1,), num_bins=MAX + 1)
