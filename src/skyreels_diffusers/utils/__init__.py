"""Helpers of skyreels_diffusers.

Submodules are imported explicitly (e.g. ``skyreels_diffusers.utils.tiny_components``) so importing
this package stays cheap.
"""
