"""swin_tiny_hf: a from-scratch Swin Transformer for small images, as transformers models.

Importing the package registers the classes with AutoConfig, AutoModel and
AutoModelForImageClassification (model_type "swin_tiny").
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_swin_tiny import SwinTinyConfig
from .image_processing import make_image_processor, save_model_and_processor
from .modeling_swin_tiny import (
    SwinTinyForImageClassification,
    SwinTinyModel,
    SwinTinyPreTrainedModel,
    no_weight_decay_parameter_names,
)

__version__ = "0.1.0"

AutoConfig.register(SwinTinyConfig.model_type, SwinTinyConfig, exist_ok=True)
AutoModel.register(SwinTinyConfig, SwinTinyModel, exist_ok=True)
AutoModelForImageClassification.register(SwinTinyConfig, SwinTinyForImageClassification, exist_ok=True)
# save_pretrained writes auto_map and copies the model code beside the weights, so the folder
# loads with trust_remote_code=True where this package is not installed.
SwinTinyConfig.register_for_auto_class()
SwinTinyModel.register_for_auto_class("AutoModel")
SwinTinyForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "SwinTinyConfig",
    "SwinTinyPreTrainedModel",
    "SwinTinyModel",
    "SwinTinyForImageClassification",
    "make_image_processor",
    "save_model_and_processor",
    "no_weight_decay_parameter_names",
]
