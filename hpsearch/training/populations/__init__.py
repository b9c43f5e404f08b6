"""Many trials of one shape in one vectorized pass: which trials go together (`plan`), their
stacked parameters and optimizer (`stacked`), the loop every population shares (`loop`), the
built-in population (`builtin`), a user's network through torch.func (`funcpop`), and
`group`, which trains a planned population (one trial at a time again if it raises)."""
