"""InterHand2.6M data: official-format reader, TFDS builder, tf.data pipeline, synthetic set.

    from input_pipeline import pipeline
    train_iter, eval_ds, info = pipeline.create_datasets(config)

Commands (thin entries over the modules named): ``python -m input_pipeline.build``
(``dataset_build.py``), ``python -m input_pipeline.synthetic`` (``synthetic_render.py``),
``python -m input_pipeline.bench`` (``throughput.py``).
"""
