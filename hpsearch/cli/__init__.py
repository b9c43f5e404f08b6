"""The command line: parse -> call the library -> render; the one package that knows the terminal.

`app` (the typer app, `hpsearch = "hpsearch.cli:app"`) lists the commands, one module each:
`sanity` (sanity-check), `coarse`, `refine`, `report`, `final`. What they share: `console` (stdout
for results, stderr for the rest), `options` (the options several commands take), `exits` (the
exit codes, and `guarded`, which every command runs in: one-line errors, Ctrl-C and SIGTERM),
`progress` (the progress bar) and `render` (a stage's outcome, the CI gates and summary).

Torch is imported only by the commands that train (coarse, refine, final, sanity-check), inside them:
`--help`, a spec error and `report` start without it. At the top of a module only typer, rich, the
errors, hpsearch.spec.options, the version and this package are imported.
"""

from hpsearch.cli.app import app

__all__ = ["app"]
