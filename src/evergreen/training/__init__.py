"""Training beyond one device: ``tf.distribute`` strategies, mixed precision, worker processes.

- :mod:`evergreen.training.strategy`: ``train.distribution`` / ``train.mixed_precision`` /
  ``train.gpu_memory_growth`` turned into a strategy scope around model building and ``fit``.
- :mod:`evergreen.training.multi_worker`: the training loop for ``multi_worker`` (Keras 3's
  ``fit`` fails under ``MultiWorkerMirroredStrategy``: keras-team/keras#20585), with the same
  early stopping, learning-rate reduction, TensorBoard scalars, class weights and a per-epoch
  checkpoint a restarted worker resumes from.
- :mod:`evergreen.training.worker`: ``evergreen train-worker``: every TF_CONFIG task runs it;
  the chief runs the whole loop, the others train the jobs the chief posts and exit 0.
"""
