"""The one place kvae touches Keras or TensorFlow internals.

kvae uses Keras' public hooks (``train_step``, ``make_train_function``, callback methods).
Where Keras offers no public way to do what kvae needs, the private use lives here, each with
the reason, and ``tests/test_keras_private.py`` fails loudly when a Keras or TensorFlow
release changes it. Nothing else in kvae reads or writes an underscore attribute of a Keras
or TensorFlow object.
"""
