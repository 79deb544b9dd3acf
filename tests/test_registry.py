import pytest

from architectures import get_spec, list_models, resolve_config
from exporter.errors import UnknownModelError


def test_registry_lists_the_architectures():
    """The four architectures register themselves: the registry-driven tests
    (test_registry_contracts.py, parametrised over list_models()) cannot silently shrink."""
    assert {"unet", "deeplab", "selfie", "segformer"} <= set(list_models())


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as err:
        get_spec("resnet")
    for name in list_models():
        assert name in str(err.value)


def test_resolve_config_overrides():
    cfg = resolve_config("unet", input_size=64, num_classes=5)
    assert cfg.input_size == (64, 64) and cfg.num_classes == 5
    assert cfg.labels[:3] == get_spec("unet").labels and cfg.labels[3:] == ("class_3", "class_4")
    cfg = resolve_config("unet", labels=["a", "b"])
    assert cfg.labels == ("a", "b") and cfg.input_size == get_spec("unet").input_size
    with pytest.raises(ValueError, match="no option"):
        resolve_config("unet", not_an_option=1)
