"""The public API: every name in `tardistill.__all__` imports, is documented, and nothing loads early."""

import inspect
import subprocess
import sys

import tardistill

PROMISED = ("Distiller", "build_detector", "load_detector", "load_config", "train", "train_student", "evaluate",
            "evaluate_checkpoint", "build_pair", "build_distiller", "resolve_class_map", "build_dataset",
            "build_loader", "generate_dataset", "Config")


def test_promised_names_import_from_the_package():
    from tardistill import Distiller, build_detector, evaluate, load_config, load_detector, train  # noqa: F401

    assert set(PROMISED) <= set(tardistill.__all__)


def test_every_public_name_resolves_and_has_a_docstring():
    for name in tardistill.__all__:
        value = getattr(tardistill, name)
        assert callable(value), name
        doc = inspect.getdoc(value)
        assert doc and len(doc.split()) >= 4, f"tardistill.{name} has no docstring"


def test_all_lists_every_public_attribute():
    public = {name for name in dir(tardistill) if not name.startswith("_")}
    # submodules imported elsewhere in this test session appear as attributes; they are not API
    assert public - set(tardistill.__all__) <= {name for name in public
                                                 if inspect.ismodule(getattr(tardistill, name))}


def test_unknown_name_is_an_attribute_error():
    try:
        tardistill.no_such_name
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_no_torch():
    code = "import sys, tardistill; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_distiller_weighted_total_is_the_trainers_weighting():
    """The public Distiller's weighted_total: sum of weight * loss over det/* and kd/*, stat/* left out."""
    import torch

    from tardistill import Distiller
    from tardistill.engine.trainable import LossModule

    assert Distiller.weighted_total is LossModule.weighted_total
    module = LossModule()
    module.loss_weights = lambda step, total: {"kd/a": 0.5}
    total, _ = module.weighted_total({"det/x": torch.tensor(2.0), "kd/a": torch.tensor(4.0),
                                      "stat/r": torch.tensor(100.0)}, 0, 10)
    assert total.item() == 4.0
