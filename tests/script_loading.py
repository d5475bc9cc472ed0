"""Import the command-line scripts under conversion/ (not a package) as modules for testing."""

import importlib.util
import os


def load_script(name: str):
    path = os.path.join(os.path.dirname(__file__), "..", "conversion", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
