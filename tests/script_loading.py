"""Import command-line scripts (conversion/, examples/...: not packages) as modules for testing."""

import importlib.util
import os


def load_script(name: str, folder: str = "conversion"):
    path = os.path.join(os.path.dirname(__file__), "..", folder, f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
