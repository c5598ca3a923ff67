"""Sub-2-bit weights in a real packed format (ANDESVL.md §4, compression; our re-creation, the recipe is unpublished).

`schemes` (uniform int-b, ternary, vector-quantised codebooks) -> `packing` (the bits) -> `packed_file`
(one safetensors file, bpw counted from its size) -> `load_packed` (a model that generates). `calibrate` measures
column importance, `allocate` chooses mixed precision by sensitivity, `gptq` (error-compensating rounding) and
`distill` (scales and norms trained against fp32) recover what rounding loses, `quality` scores the result.
"""

from .allocate import Allocation, allocate, sensitivity_table
from .calibrate import activation_importance
from .distill import distill_scales
from .gptq import gptq_batch, gptq_model, gptq_quantize, input_hessians
from .packed_file import (FORMAT, PackedFile, count_weights, file_bpw, load_packed, load_packed_state,
                          read_metadata, save_packed)
from .packing import pack_codes, pack_trits, unpack_codes, unpack_trits
from .quality import chat_chunks, evaluate_lm, text_chunks, top1_predictions
from .sweep import PAPER_BPW, YARDSTICKS, answer, load_language_model, sweep_point
from .schemes import Scheme, dequantize_matrix, parse_scheme, quantize_matrix

__all__ = [
    "Allocation", "allocate", "sensitivity_table", "activation_importance", "distill_scales", "gptq_batch",
    "gptq_model", "gptq_quantize", "input_hessians", "FORMAT", "PackedFile",
    "count_weights", "file_bpw", "load_packed", "load_packed_state", "read_metadata", "save_packed",
    "pack_codes", "pack_trits", "unpack_codes", "unpack_trits", "evaluate_lm", "text_chunks", "chat_chunks",
    "top1_predictions", "PAPER_BPW", "YARDSTICKS", "answer", "load_language_model", "sweep_point", "Scheme",
    "dequantize_matrix", "parse_scheme", "quantize_matrix",
]
