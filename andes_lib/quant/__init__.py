"""QAT, frozen PTQ encodings and QALFT (ANDESVL.md §4; our re-creation, the recipe is not published).

`fake` (fake quantization with a straight-through estimator) -> `scheme` (settings by name: w8a8, w4a16, w4a8)
-> `layers` (QuantLinear, swapped in place) -> `ptq` (calibration, frozen encodings in a file beside the
checkpoint) -> `qalft` (QAT of the base, LoRA on the frozen quantized base) and `llm` (PTQ of SmolLM2-135M).
"""

from .fake import (Encoding, choose_qparams, fake_quantize, fake_quantize_per_token, fake_quantize_weight,
                   int_range, quantize_dequantize, weight_encoding)
from .layers import QuantLinear, dequantize_model, quant_layers, quantize_model, set_mode
from .llm import ptq_point
from .ptq import (ENCODINGS_FILE, EncodingsError, calibrate, encodings_digest, load_encodings, read_encodings,
                  save_encodings, weights_digest)
from .qalft import (calibration_batches, freeze_base, ptq, qalft_train, qat, save_quantized_base, sft_rows)
from .scheme import QuantScheme, parse_scheme

__all__ = [
    "Encoding", "choose_qparams", "fake_quantize", "fake_quantize_per_token", "fake_quantize_weight", "int_range",
    "quantize_dequantize", "weight_encoding", "QuantLinear", "dequantize_model", "quant_layers", "quantize_model",
    "set_mode", "ptq_point", "ENCODINGS_FILE", "EncodingsError", "calibrate", "encodings_digest", "load_encodings",
    "read_encodings", "save_encodings", "weights_digest", "calibration_batches", "freeze_base", "ptq",
    "qalft_train", "qat", "save_quantized_base", "sft_rows", "QuantScheme", "parse_scheme",
]
