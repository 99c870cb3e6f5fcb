"""The registry of source layouts: discovery, detection order and the ``data.format`` setting it drives."""

import importlib
import pkgutil

import pytest
from pydantic import ValidationError

import inspectflow.data.layouts as registry
from inspectflow.config import DataConfig
from inspectflow.data.layouts import Layout, get_layout, layout_names, layouts
from inspectflow.errors import ConfigError

#: The layouts inspectflow ships, in the order they are detected; a new layout may stand anywhere among them.
DETECTION_ORDER = ["dagm", "mvtec", "images-masks", "kaggle-h5", "npy", "folders"]


def test_the_registry_finds_every_layout_in_detection_order() -> None:
    names = [layout.name for layout in layouts()]
    assert names == layout_names()
    assert [name for name in names if name in DETECTION_ORDER] == DETECTION_ORDER
    assert {"dagm", "images-masks"} <= {layout.name for layout in layouts() if layout.has_masks}
    assert get_layout("npy").name == "npy"
    with pytest.raises(ConfigError, match=r"tiff.*dagm.*folders"):
        get_layout("tiff")


def test_every_module_but_base_defines_a_uniquely_named_layout() -> None:
    names = []
    for module in pkgutil.iter_modules(registry.__path__):
        if module.name != "base":
            layout = importlib.import_module(f"{registry.__name__}.{module.name}").LAYOUT
            assert isinstance(layout, Layout), module.name
            names.append(layout.name)
    assert len(names) == len(set(names)) == len(layouts())


@pytest.mark.parametrize("name", ["auto", *DETECTION_ORDER])
def test_data_format_accepts_auto_and_every_registered_layout(name: str) -> None:
    assert DataConfig(format=name).format == name


def test_data_format_refuses_an_unknown_layout_naming_the_choices() -> None:
    with pytest.raises(ValidationError, match=r"'tiff'.*auto.*dagm.*folders"):
        DataConfig(format="tiff")
