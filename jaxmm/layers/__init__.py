"""Transformer building blocks (functional Flax Linen modules)."""

from jaxmm.layers.attention import (
    MultiHeadAttention,
    causal_mask,
    check_token_mask,
    combine_masks,
    dot_product_attention,
    key_padding_mask,
    padding_mask,
    prefix_lm_mask,
    segment_mask,
)
from jaxmm.layers.blocks import DTYPES, DecoderLayer, EncoderLayer, TransformerConfig
from jaxmm.layers.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
)
from jaxmm.layers.embeddings import ConvStem, Embed, PatchEmbed
from jaxmm.layers.matching import hungarian_match
from jaxmm.layers.mlp import Mlp, classifier_head, get_activation
from jaxmm.layers.norms import LayerNorm, RMSNorm, l2_normalize, make_norm
from jaxmm.layers.positions import (
    DecodePositions,
    LearnedPositionEmbedding,
    RelativePositionBias,
    RopeScaling,
    alibi_bias,
    alibi_slopes,
    apply_rotary_embedding,
    bicubic_resize_matrix,
    relative_position_bucket,
    resize_position_grid,
    sinusoidal_embedding,
    sinusoidal_positions,
)
from jaxmm.layers.stack import (
    StackOutput,
    TransformerStack,
    stack_layer_params,
    unstack_layer_params,
)

__all__ = [
    "DTYPES",
    "DecodePositions",
    "DecoderLayer",
    "Embed",
    "EncoderLayer",
    "LayerNorm",
    "LearnedPositionEmbedding",
    "Mlp",
    "ConvStem",
    "PatchEmbed",
    "MultiHeadAttention",
    "RMSNorm",
    "RelativePositionBias",
    "RopeScaling",
    "StackOutput",
    "TransformerConfig",
    "TransformerStack",
    "alibi_bias",
    "alibi_slopes",
    "apply_rotary_embedding",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "bicubic_resize_matrix",
    "causal_mask",
    "check_token_mask",
    "classifier_head",
    "combine_masks",
    "dot_product_attention",
    "get_activation",
    "hungarian_match",
    "key_padding_mask",
    "l2_normalize",
    "make_norm",
    "padding_mask",
    "prefix_lm_mask",
    "segment_mask",
    "relative_position_bucket",
    "resize_position_grid",
    "sinusoidal_embedding",
    "sinusoidal_positions",
    "stack_layer_params",
    "unstack_layer_params",
]
