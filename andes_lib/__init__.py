"""Andes Cookbook: AndesVL (arXiv 2510.11496) rebuilt small, trainable on a laptop CPU.

Importing the package registers the model with the transformers Auto classes, so a saved checkpoint
reloads with `AutoModelForImageTextToText.from_pretrained(path)` (no `trust_remote_code`).
"""

from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoImageProcessor,
                          AutoModelForImageTextToText, AutoProcessor)

from .config import AndesVisionConfig, AndesVLConfig
from .model.modeling import AndesVLForConditionalGeneration, AndesVLModel
from .model.projector import PixelShuffleProjector, pixel_shuffle
from .model.vision import AndesVisionModel
from .presets import (PAPER_PARAMS, PRESETS, build_image_processor, build_model, build_processor,
                      count_parameters, get_config)
from .processing.processor import AndesVLImageProcessor, AndesVLProcessor

AutoConfig.register(AndesVisionConfig.model_type, AndesVisionConfig, exist_ok=True)
AutoConfig.register(AndesVLConfig.model_type, AndesVLConfig, exist_ok=True)
AutoModel.register(AndesVisionConfig, AndesVisionModel, exist_ok=True)
AutoModel.register(AndesVLConfig, AndesVLModel, exist_ok=True)
AutoModelForImageTextToText.register(AndesVLConfig, AndesVLForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(AndesVLConfig, AndesVLForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(AndesVLConfig, image_processor_classes={"pil": AndesVLImageProcessor}, exist_ok=True)
AutoProcessor.register(AndesVLConfig, AndesVLProcessor, exist_ok=True)

__all__ = [
    "AndesVisionConfig", "AndesVLConfig", "AndesVisionModel", "AndesVLModel", "AndesVLForConditionalGeneration",
    "PixelShuffleProjector", "pixel_shuffle", "AndesVLImageProcessor", "AndesVLProcessor", "PRESETS",
    "PAPER_PARAMS", "build_model", "build_processor", "build_image_processor", "get_config", "count_parameters",
]
