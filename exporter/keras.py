"""The one place that selects Keras 2.

tfmot's quantisation-aware training only works on Keras 2 (`tf_keras`), and TensorFlow picks its
Keras at import time from TF_USE_LEGACY_KERAS, so this module must be imported before anything
else imports TensorFlow. Every other module takes `keras` and `tf` from here.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter hides our output

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
