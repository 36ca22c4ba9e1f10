"""Data pipelines, preprocessing and tokenizers (``jaxmm.data.tokenizers``)."""
