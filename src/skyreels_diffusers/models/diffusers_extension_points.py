# Copyright 2026 The skyreels-diffusers authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""What a model outside Diffusers needs to plug into Diffusers' hooks but Diffusers keeps in private modules.

These are the only private Diffusers names this package uses (`tests/test_private_names.py` checks that no other
file uses one). Each comes with the public API that is missing; none overrides Diffusers' behaviour.
"""

import torch.nn as nn

# FirstBlockCache and MagCache read what a block returns from `TransformerBlockRegistry`; Diffusers registers the blocks
# of its own models here and has no public way to register others (missing: a public `register_transformer_block`, or
# block metadata read from a class attribute as `_cp_plan` is). Skip-layer and perturbed-attention guidance
# (`SkipLayerGuidance`, `PerturbedAttentionGuidance`) likewise read what a skipped attention returns from
# `AttentionProcessorRegistry`, filled for Diffusers' own processors only (missing: a public registration).
from diffusers.hooks._helpers import (
    AttentionProcessorMetadata,
    AttentionProcessorRegistry,
    TransformerBlockMetadata,
    TransformerBlockRegistry,
)

# A model's context-parallel plan (`_cp_plan`) is written with these, in every Diffusers model; Diffusers exports
# `ContextParallelConfig` and `ParallelConfig` publicly, but not these two (missing: a public export).
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput  # noqa: F401


def register_block_outputs(*block_classes: type[nn.Module]) -> None:
    """Tell Diffusers' block-level caches (FirstBlockCache, MagCache) that these blocks return
    `(hidden_states, encoder_hidden_states)`."""
    metadata = TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=1)
    for block_class in block_classes:
        TransformerBlockRegistry.register(block_class, metadata)


def register_attention_skip_output(*processor_classes: type) -> None:
    """Tell Diffusers' layer-skip hooks what a skipped attention layer returns: its input, and for joint attention
    `(hidden_states, encoder_hidden_states)` as the processors return them."""
    for processor_class in processor_classes:
        AttentionProcessorRegistry.register(processor_class, AttentionProcessorMetadata(_skipped_attention_output))


def _skipped_attention_output(attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
    if encoder_hidden_states is not None and not attn.is_cross_attention and attn.added_kv_proj_dim is not None:
        return hidden_states, encoder_hidden_states
    return hidden_states
