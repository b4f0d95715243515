"""scikit-learn's 8x8 handwritten digits: 1,797 real images, bundled with scikit-learn (offline).

``load_digits()`` returns ``((x_train, y_train), (x_test, y_test))`` with x float32 of shape
(n, 8, 8, 1) holding the 0..16 grey levels divided by 16 (values in [0, 1]) and y int64.

The split is fixed, not random: the first ``n_train`` (default 1,500) images in scikit-learn's
order are the training set, the remaining 297 the test set. The same on every machine and
every run; scikit-learn's file is in collection order, so both parts hold every digit.
"""

import numpy as np

from kvae.errors import ConfigError, DataError

N_IMAGES = 1797


def load_digits(*, n_train=1500):
    """Load the digits as ``((x_train, y_train), (x_test, y_test))``; see the module docstring.

    Args:
        n_train: number of leading images used for training, 1 <= n_train < 1797.
    """
    if isinstance(n_train, bool) or not isinstance(n_train, int) or not 1 <= n_train < N_IMAGES:
        raise ConfigError(
            f"Expected `n_train` to be an integer in [1, {N_IMAGES - 1}]. "
            f"Received: n_train={n_train!r}"
        )
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise DataError(
            "Expected scikit-learn, which ships the digits data set. Received: "
            f"ImportError ({err}). Install it: pip install scikit-learn"
        ) from None
    bunch = sklearn_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16))[..., np.newaxis]
    y = np.asarray(bunch.target, dtype=np.int64)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
