"""fastrec: fast training and evaluation of transformer sequential recommenders."""

from __future__ import annotations

import importlib.util
import os
import sys

__version__ = "0.1.0"


def _register_checkout_kernels() -> None:
    """Make ``fastrec.kernels`` importable from a source checkout.

    The Triton kernels live in the top-level ``kernels/`` folder. An installed
    package gets them as ``fastrec/kernels`` through ``package_dir`` in setup.py.
    A plain checkout on ``sys.path`` has no such folder, so the module is loaded
    from ``kernels/`` under its public name instead.
    """
    if "fastrec.kernels" in sys.modules:
        return
    if os.path.isdir(os.path.join(os.path.dirname(__file__), "kernels")):
        return
    if importlib.util.find_spec("fastrec.kernels") is not None:
        return
    folder = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), os.pardir, "kernels"
    )
    init = os.path.join(folder, "__init__.py")
    if not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location(
        "fastrec.kernels", init, submodule_search_locations=[os.path.normpath(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastrec.kernels"] = module
    spec.loader.exec_module(module)


_register_checkout_kernels()
