"""A Qwen2.5-VL processor for text and images that works without torchvision.

Pipelines store their processor by class; this one lives in the package (and is exported at its top level) so
that pipeline folders saved with it load back on any machine with `skyreels_diffusers` installed.
"""

# A plain DiffusionPipeline records this module as the component's library and finds the load method by looking
# the library base classes up in it, so ProcessorMixin must be importable from here.
from transformers import (
    AutoProcessor,
    PretrainedConfig,
    ProcessorMixin,  # noqa: F401
    Qwen2_5_VLProcessor,
)


class Qwen2_5_VLImageTextProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without the video sub-processor, for environments without torchvision.

    In transformers 5.x (seen with 5.23) the Qwen2-VL video processor is torchvision-only, and
    ``ProcessorMixin`` type-checks every sub-processor against ``VideoProcessorMixin``, which transformers
    does not even export without torchvision; so the stock ``Qwen2_5_VLProcessor`` cannot be built there
    at all, not even with ``video_processor=None``. Dropping ``video_processor`` from ``__init__`` removes it from
    the processor's attributes (they are read off this signature); text and images behave exactly as in
    the parent class. ``skyreels_diffusers.tiny_components.build_tiny_text_encoder`` uses it when torchvision is missing, and
    pipelines saved with it load it back by name from this package.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if videos is not None:
            raise ValueError(
                "`videos` needs the Qwen2-VL video processor, which transformers builds only when torchvision is "
                f"installed; {type(self).__name__} accepts `text` and `images` only, got `videos` of type "
                f"{type(videos).__name__}."
            )
        return super().__call__(images=images, text=text, **kwargs)


class _Qwen2_5_VLImageTextProcessorKey(PretrainedConfig):
    # `AutoProcessor` resolves the `processor_class` name saved in processor_config.json through its
    # registry; registering under a private config class makes the name resolvable without touching
    # the real Qwen2.5-VL entry.
    model_type = "skyreels_qwen2_5_vl_image_text_processor"


AutoProcessor.register(_Qwen2_5_VLImageTextProcessorKey, Qwen2_5_VLImageTextProcessor, exist_ok=True)
