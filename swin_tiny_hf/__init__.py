"""swin_tiny_hf: a from-scratch Swin Transformer for small images, as transformers models.

Importing the package registers the classes with AutoConfig, AutoModel, AutoModelForImageClassification,
AutoBackbone and AutoImageProcessor (model_type "swin_tiny"), and tells AutoVideoProcessor there is none.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoVideoProcessor,
)

from .configuration_swin_tiny import SwinTinyConfig
from .frozen_compile import compile_frozen
from .image_processing_swin_tiny import SwinTinyImageProcessor, make_image_processor
from .modeling_swin_tiny import (
    SwinTinyBackbone,
    SwinTinyForImageClassification,
    SwinTinyModel,
    SwinTinyPreTrainedModel,
    no_weight_decay_parameter_names,
)
from .saving import save_model_and_processor

__version__ = "0.1.0"

AutoConfig.register(SwinTinyConfig.model_type, SwinTinyConfig, exist_ok=True)
AutoModel.register(SwinTinyConfig, SwinTinyModel, exist_ok=True)
AutoModelForImageClassification.register(SwinTinyConfig, SwinTinyForImageClassification, exist_ok=True)
AutoBackbone.register(SwinTinyConfig, SwinTinyBackbone, exist_ok=True)
AutoImageProcessor.register(
    SwinTinyConfig, image_processor_classes={"torchvision": SwinTinyImageProcessor}, exist_ok=True
)
# A swin_tiny folder has no video processor; said here, transformers' pipelines, which look for one, stop at this.
# Otherwise they read the image processor's auto_map as a video processor's ("SwinTinyVideoProcessor") and the
# plain pipeline("image-classification", model=folder) asks on the terminal whether to run remote code, waiting
# 15 s for an answer, though this package is installed.
AutoVideoProcessor.register(SwinTinyConfig, video_processor_classes={}, exist_ok=True)
# (The modules themselves call register_for_auto_class, so that save_pretrained writes auto_map and copies
# the model code beside the weights, from this package and from a remote-code copy alike.)

__all__ = [
    "SwinTinyConfig",
    "SwinTinyPreTrainedModel",
    "SwinTinyModel",
    "SwinTinyForImageClassification",
    "SwinTinyBackbone",
    "SwinTinyImageProcessor",
    "make_image_processor",
    "save_model_and_processor",
    "no_weight_decay_parameter_names",
    "compile_frozen",
]
