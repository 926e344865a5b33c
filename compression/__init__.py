"""Compression of BERT classifiers in pure torch: quantization, pruning, sparse storage and layers, variants.

Importing the package registers every method with `compress`.
"""

from compression.prune import (
    L1UnstructuredPruneConfig,
    PruneScope,
    RandomStructuredPruneConfig,
    RandomUnstructuredPruneConfig,
    sparsity_report,
)
from compression.quantize import (
    Int8DynamicQuantConfig,
    Int8Embedding,
    Int8Linear,
    empty_int8_embeddings_,
    empty_int8_linears_,
    int8_matmul_is_fast,
    to_dynamic_quant,
    to_dynamic_quant_,
    to_int8_linear,
)
from compression.registry import compress, compress_chain, register, registered_configs
from compression.sparse import (
    SparseLayout,
    SparseTensorParts,
    choose_layout,
    decode,
    encode,
    layout_nbytes,
    pack_state_dict,
    unpack_state_dict,
)
from compression.sparse_linear import SparseLinear, densify_, load_packed_state_dict_, to_sparse_linear
from compression.variants import build_variant, parse_variant, variant_name

__all__ = [
    "Int8DynamicQuantConfig",
    "Int8Embedding",
    "Int8Linear",
    "L1UnstructuredPruneConfig",
    "PruneScope",
    "RandomStructuredPruneConfig",
    "RandomUnstructuredPruneConfig",
    "SparseLayout",
    "SparseLinear",
    "SparseTensorParts",
    "build_variant",
    "choose_layout",
    "compress",
    "compress_chain",
    "decode",
    "densify_",
    "empty_int8_embeddings_",
    "empty_int8_linears_",
    "encode",
    "int8_matmul_is_fast",
    "layout_nbytes",
    "load_packed_state_dict_",
    "pack_state_dict",
    "parse_variant",
    "register",
    "registered_configs",
    "sparsity_report",
    "to_dynamic_quant",
    "to_dynamic_quant_",
    "to_int8_linear",
    "to_sparse_linear",
    "unpack_state_dict",
    "variant_name",
]
