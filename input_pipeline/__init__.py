"""InterHand2.6M reader, TFDS builder, tf.data pipeline and synthetic data (issue: data)."""
