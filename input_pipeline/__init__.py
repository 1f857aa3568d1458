"""InterHand2.6M data: official-format reader, TFDS builder, tf.data pipeline, synthetic set.

    train_iter, eval_ds, info = input_pipeline.create_datasets(config)
"""


def create_datasets(config, process_index=None, process_count=None, start_step=0):
  """See ``input_pipeline.pipeline.create_datasets`` (imported lazily: it brings TensorFlow)."""
  from input_pipeline import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline.create_datasets(config, process_index, process_count, start_step)


def dataset_info(config):
  """The DatasetInfo of ``config.data`` (split sizes); see input_pipeline.pipeline."""
  from input_pipeline import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline.dataset_info(config)
