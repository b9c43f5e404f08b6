"""The drivers, the only modules that know the whole order: `coarse`, `refine`, `sanity` and
`final`, over `stage` (resume reconciliation, run.json, execution, interrupt bookkeeping,
results), `strategies` (how a stage's trials are executed: all at once, in TPE waves, or in
halving rungs), `prepare` (the checks and records before training) and `plan` (`--dry-run`)."""
