"""Deprecated location of :mod:`skyreels_diffusers.tiny_components`.

The tiny components assemble whole pipelines, so they live above ``pipelines/`` (docs/design.md, "Layers of the
package"); ``utils/`` holds only low-level helpers. Names are forwarded lazily, with a deprecation warning, so this
module imports nothing from a higher layer until one is asked for.
"""

from diffusers.utils import deprecate


def __getattr__(name: str):
    from .. import tiny_components

    value = getattr(tiny_components, name)  # AttributeError for unknown names, as a module would raise
    deprecate(
        "skyreels_diffusers.utils.tiny_components",
        "1.0.0",
        f"Import `{name}` from `skyreels_diffusers.tiny_components` instead.",
        standard_warn=False,
    )
    return value
