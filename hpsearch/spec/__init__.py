"""The typed spec: its pydantic schema (`schema`), YAML loading with file/key/value errors (`load`,
`messages`), the comment-keeping edit `--write-spec` uses (`edit`), the option objects commands pass
(`options`) and the warnings on settings that are valid but make no sense (`lint`). No torch."""
