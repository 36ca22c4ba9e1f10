"""Tiny randomly initialised transformers models for the generation parity tests.

Large initialisations give peaked, tie-free next-token distributions, so greedy
and beam search have one right answer.
"""

import transformers

VOCAB, NUM_PROMPTS, NEW = 128, 10, 12
EOS, PAD, BOS = 2, 3, 1  # pad != 0 keeps HF's beam-search fill value equal to pad


def hf_model(kind: str):
    """A tiny randomly initialised `kind` model (gpt2, llama, whisper or t5)."""
    common = dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                  initializer_range=0.3)  # large init: peaked, tie-free distributions
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common)
        return transformers.GPT2LMHeadModel(cfg)
    if kind == "llama":
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=64, tie_word_embeddings=False,
                                       **common)
        return transformers.LlamaForCausalLM(cfg)
    if kind == "whisper":
        cfg = transformers.WhisperConfig(
            num_mel_bins=8, encoder_layers=2, decoder_layers=2, d_model=32,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
            decoder_ffn_dim=64, max_source_positions=8, max_target_positions=32,
            decoder_start_token_id=3, init_std=0.3, suppress_tokens=None,
            begin_suppress_tokens=None, vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS,
            pad_token_id=0)
        return transformers.WhisperForConditionalGeneration(cfg)
    common.update(pad_token_id=0, decoder_start_token_id=0, initializer_factor=2.0)
    del common["initializer_range"]
    cfg = transformers.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                relative_attention_num_buckets=8, **common)
    return transformers.T5ForConditionalGeneration(cfg)
