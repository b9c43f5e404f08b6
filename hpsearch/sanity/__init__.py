"""The lecture's checks before a search: initial loss (`initial`), activation statistics
(`activations`), overfitting a small sample (`overfit`), the learning-rate probe (`probe`), run
in order by `checks`; their result types (`results`) need no torch."""
