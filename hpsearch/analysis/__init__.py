"""What a stage's records say: ranking and ties (`rank`), one label per trial's curves (`curves`),
and a verdict per searched range with its edge flags (`verdicts`). Pure; no torch."""
