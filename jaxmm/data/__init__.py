"""Data: tf.data pipelines, preprocessing ops, the built-in dataset, local builders.

Attributes are imported lazily so ``import jaxmm.data.tokenizers`` (or
``jaxmm.data.scenes``) does not pull in TensorFlow.
"""
