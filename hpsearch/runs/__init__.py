"""The run directory: trial records and their strict read-back shape (`records`), the crash-safe
store (`store`: atomic rewrites, locked appends, the stage lock), the readers of what a stage
wrote (`read`) and the final stage's plan, rows and ledger (`final`). No torch."""
