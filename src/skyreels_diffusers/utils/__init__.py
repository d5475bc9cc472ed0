"""Helpers of skyreels_diffusers.

Submodules are imported explicitly (e.g. ``skyreels_diffusers.utils.precision``) so importing
this package stays cheap.
"""

# Media I/O is light (PyAV, NumPy, PIL), so it is exported here directly.
from .media import export_to_video_with_audio as export_to_video_with_audio
from .media import load_audio as load_audio
from .media import load_video as load_video
from .media import load_video_audio as load_video_audio
