"""Training trials: the reference one-model loop and what every loop shares (`trial`), the record
every loop feeds (`recorder`), the built-in networks (`models`), a user's network (`factory`),
checkpoints and the saved model; `populations/` trains many trials of one shape at once."""
