"""Issue 25, the seed's UNet fine-tuned: unfreezing the encoder changes the order of the tensors in a
weights .h5 (trainable before non-trainable, per layer); that order is recognised too. Its own file
(it shares nothing with test_import_seed_unet.py's trained user model) so that `--dist loadfile` can
run the two on different workers."""

import pytest

from seed_import_support import CHEAP, assert_computes_the_user_model, convert, train_user_model

UNET = ["--input-norm", "0,1", "--input-size", "64"]  # as in test_import_seed_unet.py

pytestmark = pytest.mark.slow


def test_a_fine_tuned_tutorial_unet_loads_from_its_weights_h5(tmp_path):
    # The user's code saves only the form converted here (the others are each converted in
    # test_import_seed_unet.py; the SavedModel export alone takes many seconds).
    user = train_user_model(tmp_path, "unet", 64, 8, 1, "--fine-tune", "--forms", "weights.h5")
    result = convert(user / "saved" / "weights.h5", "unet", tmp_path / "out", "--precision", "float32", *UNET, *CHEAP)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_computes_the_user_model(tmp_path / "out" / "unet" / "unet_float32.tflite", user, logits=True)
