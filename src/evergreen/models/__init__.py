"""Model families (text, tabular, image): featurizer, Keras model and raw-input export each."""
