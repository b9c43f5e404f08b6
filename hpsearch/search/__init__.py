"""What to train next: the space and its samplers (`space`), TPE through Optuna (`tpe`),
successive halving (`halving`), median stopping's bars (`median_stop`) and refine's plan of the
next stage (`refine`). Decisions only: nothing here trains. No torch."""
