"""The drivers, the only modules that know the whole order: `coarse`, `refine`, `sanity` and
`final`, over `stage` (resume reconciliation, run.json, interrupt bookkeeping, results),
`strategies` (how a stage's trials are trained: one `Strategy` each for all at once, TPE waves and
halving rungs, chosen by `strategy_for`), `base` (the stage, the tracker of its training, the
progress it reports), `prepare` (the checks and records before training) and `plan` (`--dry-run`)."""
