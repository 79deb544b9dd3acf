"""Issue 25: the seed's selfie "modified ViT" (its build_model, 256x256 by construction) comes in from
the forms its code saves, with its id2label as labels; the exported file computes what the user's
model computes on x / 255 inputs."""

import pytest

from seed_import_support import CHEAP, assert_computes_the_user_model, convert, report, train_user_model

pytestmark = pytest.mark.slow

FORMS = {
    "checkpoint prefix (the seed's class6.ckpt)": "Lips.ckpt",
    "weights .h5": "weights.h5",
    "full model .keras": "model.keras",
    "SavedModel folder": "savedmodel",
}
SEED_LABELS = "outer,hair,face,skin,clothes,accessories"


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The seed's ViT with 3 classes, one epoch of batch-1 steps on 8 synthetic 256x256 scenes."""
    return train_user_model(tmp_path_factory.mktemp("seed_vit"), "vit", 256, 8, 1)


@pytest.mark.parametrize("form", FORMS)
def test_every_saved_form_converts_to_what_the_users_model_computes(user, form, tmp_path):
    result = convert(user / "saved" / FORMS[form], "selfie", tmp_path / "out", "--precision", "float32",
                     "--input-norm", "0,1", *CHEAP)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    assert_computes_the_user_model(tmp_path / "out" / "selfie" / "selfie_float32.tflite", user, logits=False)
    assert report(tmp_path / "out", "selfie")["training"]["import"]["mapped"] == 172


def test_the_seed_labels_must_match_the_checkpoints_class_count(user, tmp_path):
    result = convert(user / "saved" / "Lips.ckpt", "selfie", tmp_path / "out", "--labels", SEED_LABELS, *CHEAP)
    assert result.returncode == 2 and "--labels names 6 classes" in result.stderr and "has 3" in result.stderr
