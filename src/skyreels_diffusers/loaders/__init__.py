from .lora_pipeline import SkyReelsV4LoraLoaderMixin


__all__ = ["SkyReelsV4LoraLoaderMixin"]
