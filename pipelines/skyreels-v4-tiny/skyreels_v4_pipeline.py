"""Loads SkyReelsV4Pipeline from the installed `skyreels_diffusers` package (pip install skyreels-diffusers)."""

from skyreels_diffusers import SkyReelsV4Pipeline


__all__ = ["SkyReelsV4Pipeline"]
